"""Time one training step (forward + loss + backward + AdamW step + reset_states) of the spiking restorers.

One JSON line per case, then one JSON line per ratio (cases compared inside this process):
    esdnet_fast / esdnet_sj   the fast attention against spikingjelly's MultiDimensionalAttention (the baseline)
    kd_<preset> / spikerir_<preset>   the H-KD step (NAFNet-w32 teacher) against the student alone
Examples (see benchmarks/README.md):
    python benchmarks/train_step.py --device cuda --out results.jsonl
    python benchmarks/train_step.py --device cpu --tiny
"""
import argparse
import contextlib
import gc
import json
import os
import statistics
import sys
import time

import torch
from torch.nn import functional as F

import spikerir_plugin  # noqa: F401  (registers the archs)
from spikerir_plugin.archs.esdnet_arch import ESDNet
from spikerir_plugin.archs.nafnet_arch import NAFNet
from spikerir_plugin.archs.spikerir_arch import SpikerIR
from spikerir_plugin.losses.fft_loss import FFTLoss
from spikerir_plugin.losses.hint_loss import HintLoss
from spikerir_plugin.models.feature_hints import (FeatureTap, StudentWithAdapters, default_hint_layers,
                                                  probe_channels)
from spikerir_plugin.utils import speed as fast
from spikerir_plugin.utils.snn import reset_states, time_mean

CASES = ('esdnet_sj', 'esdnet_fast', 'spikerir_tiny', 'spikerir_base', 'kd_tiny', 'kd_base')
DTYPES = ('fp32', 'bf16')
RATIOS = (('esdnet_fast', 'esdnet_sj'), ('kd_tiny', 'spikerir_tiny'), ('kd_base', 'spikerir_base'))
KD_WEIGHT = 0.12  # the paper's constant gamma; the distillation model's default hint/KD composition
FFT_WEIGHT = 0.1  # the paper's lambda, as in every shipped options file
# Official ESDNet (ported to spikingjelly 2.0), fp32 train step on an H100: shared/reference/anchors.md
OFFICIAL_ESDNET_H100_MS = {(12, 64): 229.6, (4, 256): 2326.0}
TARGETS = {'esdnet_fast_4x256_ms': 150.0, 'kd_over_student': 1.3}
DEFAULTS = {  # device -> (sizes, warmup, iters, dtypes)
    'cuda': ('12x64,4x256', 5, 20, 'fp32,bf16'),
    'cpu': ('2x64', 1, 3, 'fp32'),
    'tiny': ('2x32', 1, 2, 'fp32'),
}


def esdnet(attention, tiny):
    if tiny:
        return ESDNet(dim=8, en_num_blocks=(1, 1, 1, 1), de_num_blocks=(1, 1, 1, 1), T=2, attention=attention,
                      reduction_t=2, reduction_c=4)
    return ESDNet(dim=48, en_num_blocks=(4, 4, 8, 8), de_num_blocks=(2, 2, 2, 2), T=4, attention=attention)


def spikerir(preset, tiny):
    if tiny:
        return SpikerIR(preset=preset, dim=4 if preset == 'tiny' else 8, enc_blocks=(1, 1, 1),
                        dec_blocks=(1, 1, 1), T=2, reduction_t=2)
    return SpikerIR(preset=preset, T=4)


def nafnet_teacher(tiny):
    if tiny:
        return NAFNet(width=8, middle_blk_num=1, enc_blk_nums=[1, 1, 1, 1], dec_blk_nums=[1, 1, 1, 1])
    return NAFNet(preset='sidd-width32')


def parse_sizes(text):
    sizes = []
    for item in text.split(','):
        try:
            batch, side = (int(v) for v in item.lower().split('x'))
        except ValueError:
            raise SystemExit(f'--sizes: {item!r} is not BATCHxSIDE (e.g. 12x64,4x256)')
        sizes.append((batch, side))
    return sizes


def parse_list(text, valid, flag):
    items = [v for v in text.split(',') if v]
    bad = [v for v in items if v not in valid]
    if bad:
        raise SystemExit(f'{flag}: unknown {bad}; valid: {",".join(valid)}')
    return items


class SavedTensorBytes(contextlib.AbstractContextManager):
    """Bytes of distinct storages autograd saves for backward in one step (activation memory; device-agnostic)."""

    def __init__(self):
        self.storages = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t):
        storage = t.untyped_storage()
        self.storages[(storage.data_ptr(), t.device)] = storage.nbytes()
        return t

    def __enter__(self):
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        return self._hooks.__exit__(*exc)

    @property
    def mib(self):
        return sum(self.storages.values()) / 2 ** 20


class PeakMemory:
    """CUDA: torch.cuda.max_memory_allocated after a per-case reset (exact for the caching allocator).

    CPU has no allocator peak counter, so ``peak_mib`` is an estimate: weights + gradients + 2 AdamW moments of the
    trained parameters, the teacher's weights, and the bytes autograd saves for backward (SavedTensorBytes).
    ``rss_delta_mib`` is also given: the process peak RSS (VmHWM, reset per case through /proc/self/clear_refs)
    minus the RSS at the start of the case; it under-reads whenever freed memory from an earlier case is reused."""

    def __init__(self, device):
        self.device = device
        self.kind = 'cuda_max_allocated' if device.type == 'cuda' else 'cpu_estimate_params_grads_adam_saved'

    @staticmethod
    def _status_kib(field):
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
        raise KeyError(field)

    def start(self):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')  # reset the kernel's peak-RSS mark for this process
            self.rss_base = self._status_kib('VmRSS:')
        except (OSError, KeyError):
            self.rss_base = None

    def peak_mib(self, trained_params, frozen_params, saved_mib):
        if self.device.type == 'cuda':
            return torch.cuda.max_memory_allocated(self.device) / 2 ** 20
        return (4 * trained_params + frozen_params) * 4 / 2 ** 20 + saved_mib

    def rss_delta_mib(self):
        if self.device.type == 'cuda' or self.rss_base is None:
            return None
        return (self._status_kib('VmHWM:') - self.rss_base) / 1024


class StepTimer:
    def __init__(self, device):
        self.device = device

    def __call__(self, fn):
        if self.device.type == 'cuda':
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        started = time.perf_counter()
        fn()
        return (time.perf_counter() - started) * 1e3


def build_case(name, tiny):
    """-> (trained module, student to reset, teacher or None, teacher feature tap or None)."""
    if name.startswith('esdnet_'):
        net = esdnet('spikingjelly' if name == 'esdnet_sj' else 'fast', tiny)
        return net, net, None, None
    preset = name.split('_', 1)[1]
    student = spikerir(preset, tiny)
    if name.startswith('spikerir_'):
        return student, student, None, None
    teacher = nafnet_teacher(tiny).eval().requires_grad_(False)
    s_names, t_names = zip(*default_hint_layers(student, teacher))
    s_tap, t_tap = FeatureTap(student, s_names, 'student'), FeatureTap(teacher, t_names, 'teacher')
    probe = 32 if tiny else 64
    try:
        s_shapes = probe_channels(student, s_tap, 3, probe, torch.device('cpu'))
    finally:
        s_tap.remove()
    t_shapes = probe_channels(teacher, t_tap, 3, probe, torch.device('cpu'))
    wrapper = StudentWithAdapters(student, s_names, [s[0] for s in s_shapes], [t[0] for t in t_shapes])
    return wrapper, student, teacher, t_tap


def make_step_fn(net, teacher, t_tap, device, speed):
    """forward + loss + backward for (x, gt); returns the loss tensor. The composition of the shipped options in
    SpikerIRDistillModel: L1(out, gt) + 0.1 FFT(out, gt) [+ w * (sum MSE(adapter(student feature), teacher feature)
    + L1(out, teacher out))]."""
    fwd = fast.maybe_compile(net, speed)
    teacher_fwd = fast.maybe_compile(teacher, speed) if teacher is not None else None
    hint_loss, fft_loss = HintLoss('mse'), FFTLoss(loss_weight=FFT_WEIGHT)

    def student_step(x, gt):
        with fast.autocast_context(device, speed):
            out = fwd(x).float()
            loss = F.l1_loss(out, gt) + fft_loss(out, gt)
        loss.backward()
        return loss.detach()

    def kd_step(x, gt):
        with torch.no_grad(), fast.autocast_context(device, speed):
            t_out, t_feats = t_tap.run(teacher_fwd, x)
        reset_states(teacher)
        t_feats = [time_mean(f).float() for f in t_feats]
        with fast.autocast_context(device, speed):
            out, hints = fwd(x, [f.shape[-2:] for f in t_feats])
            out = out.float()
            distill = sum(hint_loss(h.float(), t) for h, t in zip(hints, t_feats)) + F.l1_loss(out, t_out.float())
            loss = F.l1_loss(out, gt) + fft_loss(out, gt) + KD_WEIGHT * distill
        loss.backward()
        return loss.detach()

    return student_step if teacher is None else kd_step


def lif_state_dtype(module):
    from spikingjelly.activation_based.neuron.base_node import BaseNode
    dtypes = {str(getattr(m, 'v').dtype).replace('torch.', '') for m in module.modules()
              if isinstance(m, BaseNode) and isinstance(getattr(m, 'v', None), torch.Tensor)}
    return ','.join(sorted(dtypes)) or None


def run_case(name, batch, side, dtype, args, device, lif_info):
    torch.manual_seed(0)
    speed = fast.SpeedOptions.from_dict({'bf16': dtype == 'bf16', 'channels_last': args.channels_last,
                                         'compile': compile_opt(args), 'cuda_graph': args.cuda_graph})
    net, student, teacher, t_tap = build_case(name, args.tiny)
    net = fast.prepare_model(net.to(device).train(), speed)
    if teacher is not None:
        teacher = fast.prepare_model(teacher.to(device), speed)
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    step = make_step_fn(net, teacher, t_tap, device, speed)
    graphed = fast.cuda_graph_step(step, device, speed, model=net)
    batches = [(fast.prepare_input(torch.rand(batch, 3, side, side, device=device), speed),
                torch.rand(batch, 3, side, side, device=device)) for _ in range(2)]  # rotate two input sets
    state = {'i': 0, 'loss': None}

    def train_step():
        x, gt = batches[state['i'] % 2]
        state['i'] += 1
        optimizer.zero_grad(set_to_none=not args.cuda_graph)  # graphs need fixed gradient addresses
        state['loss'] = graphed(x, gt)
        optimizer.step()
        state['lif'] = state.get('lif') or lif_state_dtype(student)  # read before the reset clears it
        reset_states(student)

    memory, timer = PeakMemory(device), StepTimer(device)
    memory.start()
    with SavedTensorBytes() as saved:  # the first warm-up step also counts the activations kept for backward
        timer(train_step)
    for _ in range(max(args.warmup - 1, 0)):
        timer(train_step)
    times = [timer(train_step) for _ in range(args.iters)]
    n_params = sum(p.numel() for p in net.parameters())
    n_teacher = sum(p.numel() for p in teacher.parameters()) if teacher is not None else 0
    record = {
        'name': name, 'device': str(device), 'device_name': device_name(device), 'dtype': dtype,
        'compile': compile_opt(args), 'channels_last': args.channels_last, 'cuda_graph': args.cuda_graph,
        'tiny': args.tiny, 'batch': batch, 'size': side, 'T': student.T,
        'params': n_params, 'teacher_params': n_teacher,
        'step_ms': round(statistics.median(times), 2), 'step_ms_min': round(min(times), 2), 'iters': len(times),
        'peak_mem_mib': round(memory.peak_mib(n_params, n_teacher, saved.mib), 1), 'peak_mem_kind': memory.kind,
        'rss_delta_mib': None if memory.rss_delta_mib() is None else round(memory.rss_delta_mib(), 1),
        'saved_for_backward_mib': round(saved.mib, 1),
        'lif_impl': lif_info[0].get('implementation'), 'lif_fused': lif_info[1], 'lif_state_dtype': state['lif'],
        'loss': float(state['loss']),
    }
    official = OFFICIAL_ESDNET_H100_MS.get((batch, side))
    if name.startswith('esdnet') and official and not args.tiny and device.type == 'cuda':
        record['official_esdnet_h100_ms'] = official
        record['speedup_vs_official'] = round(official / record['step_ms'], 2)
    del net, student, teacher, optimizer, step, graphed, batches
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()
    return record


def compile_opt(args):
    if not args.compile:
        return False
    return {k: v for k, v in (('backend', args.compile_backend), ('mode', args.compile_mode)) if v} or True


def device_name(device):
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return f'cpu x{os.cpu_count()} threads={torch.get_num_threads()}'


def ratio_records(records, tiny, device):
    by_key = {(r['name'], r['batch'], r['size'], r['dtype']): r for r in records}
    out = []
    for num, den in RATIOS:
        for (name, batch, side, dtype), r in by_key.items():
            base = by_key.get((den, batch, side, dtype))
            if name != num or base is None:
                continue
            ratio = {'ratio': f'{num}/{den}', 'batch': batch, 'size': side, 'dtype': dtype,
                     'step_ms_ratio': round(r['step_ms'] / base['step_ms'], 3),
                     'speedup': round(base['step_ms'] / r['step_ms'], 3),
                     'peak_mem_ratio': (round(r['peak_mem_mib'] / base['peak_mem_mib'], 3)
                                        if base['peak_mem_mib'] > 0 else None)}
            if num.startswith('kd_'):
                ratio['target_max'] = TARGETS['kd_over_student']
                ratio['target_met'] = ratio['step_ms_ratio'] <= TARGETS['kd_over_student']
            out.append(ratio)
    for r in records:  # the absolute ESDNet target is defined for the H100 only
        if r['name'] == 'esdnet_fast' and (r['batch'], r['size']) == (4, 256) and device.type == 'cuda' and not tiny:
            out.append({'target': 'esdnet_fast 4x256 step_ms', 'dtype': r['dtype'], 'device_name': r['device_name'],
                        'value': r['step_ms'], 'target_max': TARGETS['esdnet_fast_4x256_ms'],
                        'target_met': r['step_ms'] <= TARGETS['esdnet_fast_4x256_ms']})
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', choices=('cpu', 'cuda'), default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--cases', default=','.join(CASES), help=f'comma list of {",".join(CASES)}')
    p.add_argument('--sizes', help='BATCHxSIDE list; default 12x64,4x256 on cuda, 2x64 on cpu, 2x32 with --tiny')
    p.add_argument('--dtypes', help='fp32,bf16 (bf16 = autocast); default both on cuda, fp32 on cpu')
    p.add_argument('--warmup', type=int, help='untimed steps (default 5 cuda, 1 cpu)')
    p.add_argument('--iters', type=int, help='timed steps, the median is reported (default 20 cuda, 3 cpu)')
    p.add_argument('--tiny', action='store_true', help='tiny widths, T=2, 2x32 images: a seconds-long smoke run')
    p.add_argument('--compile', action='store_true', help='torch.compile the trained network (and the teacher)')
    p.add_argument('--compile-backend', help='torch.compile backend (default inductor; eager/aot_eager to debug)')
    p.add_argument('--compile-mode', help='torch.compile mode, e.g. max-autotune-no-cudagraphs')
    p.add_argument('--channels-last', action='store_true', help='speed.channels_last')
    p.add_argument('--cuda-graph', action='store_true', help='capture forward+loss+backward in a CUDA graph')
    p.add_argument('--threads', type=int, help='torch.set_num_threads on cpu (default: torch\'s; 1 with --tiny, '
                   'where thread start-up dominates and a busy 2-core box oversubscribes badly)')
    p.add_argument('--out', help='also write the JSON lines to this file')
    args = p.parse_args(argv)
    sizes, warmup, iters, dtypes = DEFAULTS['tiny' if args.tiny else args.device]
    args.sizes = parse_sizes(args.sizes or sizes)
    args.dtypes = parse_list(args.dtypes or dtypes, DTYPES, '--dtypes')
    args.cases = parse_list(args.cases, CASES, '--cases')
    if args.threads is None and args.tiny:
        args.threads = 1
    args.warmup = warmup if args.warmup is None else args.warmup
    args.iters = iters if args.iters is None else args.iters
    if args.iters < 1 or args.warmup < 1:
        raise SystemExit('--iters and --warmup must be >= 1 (the first warm-up step also measures saved tensors)')
    return args


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise SystemExit('--device cuda: no CUDA device is visible to torch')
        torch.backends.cudnn.benchmark = True
    elif args.threads:
        torch.set_num_threads(args.threads)
    if args.cuda_graph:
        try:
            fast.SpeedOptions.from_dict({'cuda_graph': True, 'compile': compile_opt(args)}).check_device(device)
        except (RuntimeError, ValueError) as error:
            raise SystemExit(f'--cuda-graph: {error}')
    lif_info = fast.check_fused_lif(device)
    print(json.dumps({'lif_implementation': lif_info[0], 'fused': lif_info[1], 'device': device_name(device),
                      'torch': torch.__version__}), flush=True)
    sink = open(args.out, 'w') if args.out else None
    records = []
    try:
        for batch, side in args.sizes:
            for dtype in args.dtypes:
                for name in args.cases:
                    record = run_case(name, batch, side, dtype, args, device, lif_info)
                    records.append(record)
                    emit(record, sink)
        for ratio in ratio_records(records, args.tiny, device):
            emit(ratio, sink)
    finally:
        if sink:
            sink.close()
    return records


def emit(record, sink):
    line = json.dumps(record)
    print(line, flush=True)
    if sink:
        sink.write(line + '\n')


if __name__ == '__main__':
    main(sys.argv[1:])
