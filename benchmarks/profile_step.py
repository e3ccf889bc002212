"""Profile one training step of a benchmark case (torch.profiler): where the time goes, operator by operator.

The step is the model's own ``optimize_parameters``, built exactly as in benchmarks/train_step.py (same cases,
sizes and speed flags). Prints (and with --out writes) the top operators by self device time (CPU time on a CPU),
averaged per step. Example:
    python benchmarks/profile_step.py --device cuda --case esdnet_fast --size 4x256 --dtype bf16 --channels-last
"""
import argparse
import logging
import os
import sys
import tempfile

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_step  # noqa: E402  (the benchmark's case definitions)
from basicsr.models import build_model  # noqa: E402
from basicsr.utils import get_root_logger  # noqa: E402
from spikerir_plugin.utils import console  # noqa: E402


def profile_case(args):
    device = torch.device(args.device)
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
    elif args.threads:
        torch.set_num_threads(args.threads)
    get_root_logger(log_level=logging.WARNING)
    (batch, side), = train_step.parse_sizes(args.size)
    speed = {'bf16': args.dtype == 'bf16', 'channels_last': args.channels_last, 'checkpoint': args.checkpoint,
             'teacher_bf16': args.teacher_bf16, 'teacher_cuda_graph': args.teacher_cuda_graph}
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as workdir:
        model = build_model(train_step.case_options(args.case, args, device, speed, workdir))
    x, gt = torch.rand(batch, 3, side, side, device=device), torch.rand(batch, 3, side, side, device=device)

    def step(i):
        model.feed_data({'lq': x, 'gt': gt})
        model.optimize_parameters(i)

    for i in range(args.warmup):
        step(i + 1)
    if device.type == 'cuda':
        torch.cuda.synchronize()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
    with profile(activities=activities) as prof:
        for i in range(args.steps):
            step(args.warmup + i + 1)
        if device.type == 'cuda':
            torch.cuda.synchronize()
    sort = 'self_cuda_time_total' if device.type == 'cuda' else 'self_cpu_time_total'
    table = prof.key_averages().table(sort_by=sort, row_limit=args.rows, max_name_column_width=70)
    flags = ' '.join(f'{k}={v}' for k, v in speed.items() if v)
    header = (f'# {args.case} {batch}x{side} {args.dtype} {flags or "(no speed flags)"} on '
              f'{train_step.device_name(device)}, torch {torch.__version__}; {args.steps} profiled steps after '
              f'{args.warmup} warm-up steps (totals are for all profiled steps)\n')
    return header + table


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', choices=('cpu', 'cuda'), default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--case', choices=train_step.CASES, default='esdnet_fast')
    p.add_argument('--size', default='4x256', help='BATCHxSIDE')
    p.add_argument('--dtype', choices=train_step.DTYPES, default='fp32')
    p.add_argument('--channels-last', action='store_true')
    p.add_argument('--checkpoint', action='store_true')
    p.add_argument('--teacher-bf16', action='store_true')
    p.add_argument('--teacher-cuda-graph', action='store_true')
    p.add_argument('--tiny', action='store_true', help='tiny widths (a seconds-long check of this script)')
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--steps', type=int, default=2)
    p.add_argument('--rows', type=int, default=30)
    p.add_argument('--threads', type=int)
    p.add_argument('--out', help='also write the table to this file')
    args = p.parse_args(argv)
    text = profile_case(args)
    console.info(text)
    if args.out:
        from spikerir_plugin.utils.atomic import atomic_write_text
        atomic_write_text(args.out, text)
    return text


if __name__ == '__main__':
    main(sys.argv[1:])
