"""Time one training step of the spiking restorers: the model's own ``optimize_parameters`` (forward, loss,
backward, optimizer step), with the model built from an options dict exactly as basicsr's pipeline builds it.

One JSON line per case, then one JSON line per ratio (cases compared inside this process):
    esdnet_fast / esdnet_sj   the fast attention against spikingjelly's MultiDimensionalAttention (the baseline)
    kd_<preset> / spikerir_<preset>   direct distillation from the NAFNet-w32 teacher (1x1 hint adapters) against
                                      the student alone
    twin_tiny / spikerir_tiny         step 1 of the shipped recipe: the analog twin (rate neurons, T=1) distilled
                                      from the NAFNet-w32 teacher
    chain_tiny / spikerir_tiny        step 2: the spiking student distilled from its twin
The losses are the shipped recipe: the ``train`` sections of options/train_SpikerIR_twin_SIDD.yml (twin) and
options/train_SpikerIR_SIDD.yml (the student; alone: the same without the teacher's terms). Examples (see
benchmarks/README.md):
    python benchmarks/train_step.py --device cuda --out results.jsonl
    python benchmarks/train_step.py --device cpu --tiny
"""
import argparse
import contextlib
import copy
import gc
import json
import logging
import os
import statistics
import sys
import tempfile
import time

import torch
import yaml

import spikerir_plugin  # noqa: F401  (registers the archs and models)
from basicsr.models import build_model
from basicsr.utils import get_root_logger
from spikerir_plugin.models import speed as train_speed
from spikerir_plugin.utils.options import in_process_train_options
from spikerir_plugin.utils import console

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE_OPTIONS = os.path.join(REPO_ROOT, 'options', 'train_SpikerIR_SIDD.yml')
TWIN_OPTIONS = os.path.join(REPO_ROOT, 'options', 'train_SpikerIR_twin_SIDD.yml')
CASES = ('esdnet_sj', 'esdnet_fast', 'spikerir_tiny', 'spikerir_base', 'kd_tiny', 'kd_base', 'twin_tiny',
         'chain_tiny')
DTYPES = ('fp32', 'bf16')
RATIOS = (('esdnet_fast', 'esdnet_sj'), ('kd_tiny', 'spikerir_tiny'), ('kd_base', 'spikerir_base'),
          ('twin_tiny', 'spikerir_tiny'), ('chain_tiny', 'spikerir_tiny'))
DISTILL_KEYS = ('hint_opt', 'kd_opt', 'kd_schedule', 'hint_layers', 'hint_probe_size', 'hint_adapter',
                'hint_schedule', 'kd_inputs', 'init_from_teacher')
TWIN_KEYS = {'neuron': 'rate', 'T': 1, 'reduction_t': 1}  # the analog twin of a SpikerIR student
# Official ESDNet (ported to spikingjelly 2.0), fp32 train step on an H100 (measured by the plugin's authors)
OFFICIAL_ESDNET_H100_MS = {(12, 64): 229.6, (4, 256): 2326.0}
OFFICIAL_ESDNET_H100_PEAK_GIB = {(12, 64): 9.22, (4, 256): 42.72}
TARGETS = {'esdnet_fast_4x256_ms': 150.0, 'kd_over_student': 1.3, 'esdnet_peak_fraction': 0.25}
DEFAULTS = {  # device -> (sizes, warmup, iters, dtypes)
    'cuda': ('12x64,4x256', 5, 20, 'fp32,bf16'),
    'cpu': ('2x64', 1, 3, 'fp32'),
    'tiny': ('2x32', 1, 2, 'fp32'),
}


def network_options(name, tiny):
    """(network_g, network_t or None, options file of the recipe) of a case."""
    if name.startswith('esdnet_'):
        attention = 'spikingjelly' if name == 'esdnet_sj' else 'fast'
        if tiny:
            return dict(type='ESDNet', dim=8, en_num_blocks=[1, 1, 1, 1], de_num_blocks=[1, 1, 1, 1], T=2,
                        attention=attention, reduction_t=2, reduction_c=4), None, RECIPE_OPTIONS
        return dict(type='ESDNet', dim=48, en_num_blocks=[4, 4, 8, 8], de_num_blocks=[2, 2, 2, 2], T=4,
                    attention=attention), None, RECIPE_OPTIONS
    preset = name.split('_', 1)[1]
    if tiny:
        student = dict(type='SpikerIR', preset=preset, dim=4 if preset == 'tiny' else 8, enc_blocks=[1, 1, 1],
                       dec_blocks=[1, 1, 1], T=2, reduction_t=2)
        teacher = dict(type='NAFNet', width=8, middle_blk_num=1, enc_blk_nums=[1, 1, 1, 1], dec_blk_nums=[1, 1, 1, 1])
    else:
        student = dict(type='SpikerIR', preset=preset, T=4)
        teacher = dict(type='NAFNet', preset='sidd-width32')
    twin = dict(student, **TWIN_KEYS)
    if name.startswith('twin_'):  # step 1: the twin learns from the ANN teacher
        return twin, teacher, TWIN_OPTIONS
    if name.startswith('chain_'):  # step 2: the student learns from its twin
        return student, twin, RECIPE_OPTIONS
    return student, (teacher if name.startswith('kd_') else None), RECIPE_OPTIONS


def recipe_train_options(recipe, teacher):
    """The shipped training recipe's loss/optimizer keys (from the options file ``recipe``); without a teacher its
    distillation keys are dropped; with an ANN teacher, the keys that need a same-architecture one."""
    with open(recipe) as f:
        train = yaml.safe_load(f)['train']
    keep = ('optim_g', 'pixel_opt', 'perceptual_opt', 'fft_opt') + (DISTILL_KEYS if teacher else ())
    train = {k: copy.deepcopy(v) for k, v in train.items() if k in keep and v is not None}
    if teacher is not None and teacher.get('type') != 'SpikerIR':
        train.pop('init_from_teacher', None)
        if train.get('hint_adapter') == 'identity':
            train.pop('hint_adapter')  # 1x1 adapters to an ANN's channels
    train['optim_g'] = {'type': 'AdamW', 'lr': 1e-4}  # the step's cost does not depend on the rate
    train['ema_decay'] = 0
    return train


def case_options(name, args, device, speed, workdir):
    """A basicsr options dict for the case (a random-weight teacher checkpoint is written to workdir)."""
    student, teacher, recipe = network_options(name, args.tiny)
    opt = in_process_train_options(
        {'name': f'bench_{name}', 'model_type': 'SpikerIRDistillModel' if teacher else 'SpikingSRModel',
         'network_g': student, 'path': {'pretrain_network_g': None},
         'train': recipe_train_options(recipe, teacher), 'speed': speed}, workdir, device.type)
    if teacher is not None:
        from basicsr.archs import build_network
        torch.manual_seed(1)
        ckpt = os.path.join(workdir, f'teacher_{name}.pth')
        torch.save({'params': build_network(dict(teacher)).state_dict()}, ckpt)
        opt['network_t'] = teacher
        opt['path'].update(pretrain_network_t=ckpt, param_key_t='params', strict_load_t=True)
    return opt


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


class _NeuronInputDtypes:
    """Records the dtypes neurons receive (their state has the input's dtype) during one forward."""

    def __init__(self, module):
        from spikingjelly.activation_based.neuron.base_node import BaseNode
        self.dtypes = set()
        self.handles = [m.register_forward_hook(self._hook) for m in module.modules() if isinstance(m, BaseNode)]

    def _hook(self, module, args, output):
        if args and isinstance(args[0], torch.Tensor):
            self.dtypes.add(str(args[0].dtype).replace('torch.', ''))


def lif_state_dtype(module):
    """The dtype(s) of the spiking neurons' state in the last step: the neurons keep no state between calls, so a
    forward hook reads the dtype of what they are fed (after the fp32 pre-hook under bf16)."""
    probe = getattr(module, '_bench_dtype_probe', None)
    if probe is None:
        probe = module._bench_dtype_probe = _NeuronInputDtypes(module)
        return None  # known from the next step on
    return ','.join(sorted(probe.dtypes)) or None


def run_case(name, batch, side, dtype, args, device, lif_info):
    torch.manual_seed(0)
    speed = {'bf16': dtype == 'bf16', 'channels_last': args.channels_last, 'compile': compile_opt(args),
             'checkpoint': args.checkpoint, 'teacher_bf16': args.teacher_bf16,
             'teacher_cuda_graph': args.teacher_cuda_graph}
    with tempfile.TemporaryDirectory() as workdir:
        model = build_model(case_options(name, args, device, speed, workdir))
    student = model.bare_net_g()
    graph_speed = train_speed.SpeedOptions.from_dict({'cuda_graph': args.cuda_graph})
    optimizer = model.optimizer_g
    if args.cuda_graph:  # the model's own forward + loss + backward, captured; the optimizer step runs outside
        def forward_backward(lq, gt):
            model.lq, model.gt = lq, gt
            return model.forward_backward(1)['l_total']
        graphed = train_speed.cuda_graph_step(forward_backward, device, graph_speed, model=student)
    batches = [(torch.rand(batch, 3, side, side, device=device), torch.rand(batch, 3, side, side, device=device))
               for _ in range(2)]  # two input sets alternate (never zeros)
    state = {'i': 0}

    def train_step():
        x, gt = batches[state['i'] % 2]
        state['i'] += 1
        if args.cuda_graph:
            optimizer.zero_grad(set_to_none=False)  # graphs need fixed gradient addresses
            state['loss'] = graphed(x, gt)
            optimizer.step()
        else:
            model.feed_data({'lq': x, 'gt': gt})
            model.optimize_parameters(state['i'])
            state['loss'] = model._step_losses['l_total']
        state['lif'] = state.get('lif') or lif_state_dtype(student)

    memory, timer = PeakMemory(device), StepTimer(device)
    memory.start()
    with SavedTensorBytes() as saved:  # the first warm-up step also counts the activations kept for backward
        timer(train_step)
    for _ in range(max(args.warmup - 1, 0)):
        timer(train_step)
    times = [timer(train_step) for _ in range(args.iters)]
    trained = model.trainable_parameters()
    n_params = sum(p.numel() for p in trained)
    n_teacher = sum(p.numel() for p in model.net_t.parameters()) if getattr(model, 'net_t', None) else 0
    record = {
        'name': name, 'device': str(device), 'device_name': device_name(device), 'dtype': dtype,
        'compile': compile_opt(args), 'channels_last': args.channels_last, 'checkpoint': args.checkpoint,
        'teacher_bf16': args.teacher_bf16, 'teacher_cuda_graph': args.teacher_cuda_graph,
        'cuda_graph': args.cuda_graph, 'tiny': args.tiny, 'batch': batch, 'size': side, 'T': student.T,
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
        record['peak_fraction_of_official'] = round(
            record['peak_mem_mib'] / 1024 / OFFICIAL_ESDNET_H100_PEAK_GIB[(batch, side)], 3)
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
            if num.startswith('kd_'):  # the GPU target of the direct distillation step
                ratio['target_max'] = TARGETS['kd_over_student']
                ratio['target_met'] = ratio['step_ms_ratio'] <= TARGETS['kd_over_student']
            out.append(ratio)
    for r in records:  # the absolute ESDNet target is defined for the H100 only
        if r['name'] == 'esdnet_fast' and (r['batch'], r['size']) == (4, 256) and device.type == 'cuda' and not tiny:
            out.append({'target': 'esdnet_fast 4x256 step_ms', 'dtype': r['dtype'], 'device_name': r['device_name'],
                        'value': r['step_ms'], 'target_max': TARGETS['esdnet_fast_4x256_ms'],
                        'target_met': r['step_ms'] <= TARGETS['esdnet_fast_4x256_ms']})
            out.append({'target': 'esdnet_fast 4x256 peak memory / official', 'dtype': r['dtype'],
                        'value': r['peak_fraction_of_official'], 'target_max': TARGETS['esdnet_peak_fraction'],
                        'target_met': r['peak_fraction_of_official'] <= TARGETS['esdnet_peak_fraction']})
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
    p.add_argument('--checkpoint', action='store_true', help='speed.checkpoint (recompute blocks in backward)')
    p.add_argument('--teacher-bf16', action='store_true', help='speed.teacher_bf16 (KD cases)')
    p.add_argument('--teacher-cuda-graph', action='store_true', help='speed.teacher_cuda_graph (KD cases)')
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
    get_root_logger(log_level=logging.WARNING)  # the models log their network printouts at INFO
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise SystemExit('--device cuda: no CUDA device is visible to torch')
        torch.backends.cudnn.benchmark = True
    elif args.threads:
        torch.set_num_threads(args.threads)
    if args.cuda_graph:
        try:
            train_speed.SpeedOptions.from_dict({'cuda_graph': True, 'compile': compile_opt(args)}).check_device(device)
        except (RuntimeError, ValueError) as error:
            raise SystemExit(f'--cuda-graph: {error}')
    lif_info = train_speed.check_fused_lif(device)
    sink = open(args.out, 'w') if args.out else None
    emit(environment(device, lif_info), sink)
    records = []
    try:
        for batch, side in args.sizes:
            for dtype in args.dtypes:
                for name in args.cases:
                    try:
                        record = run_case(name, batch, side, dtype, args, device, lif_info)
                    except Exception as error:  # e.g. out of memory: report it and measure the other cases
                        record = {'name': name, 'batch': batch, 'size': side, 'dtype': dtype,
                                  'error': f'{type(error).__name__}: {str(error).splitlines()[0][:300]}'}
                    else:
                        records.append(record)
                    emit(record, sink)
                    gc.collect()  # the case's model and tensors are unreachable once run_case returned
                    if device.type == 'cuda':
                        torch.cuda.empty_cache()
        for ratio in ratio_records(records, args.tiny, device):
            emit(ratio, sink)
    finally:
        if sink:
            sink.close()
    print_table(records)
    return records


def environment(device, lif_info):
    from importlib.metadata import version
    env = {'device': device_name(device), 'torch': torch.__version__, 'spikingjelly': version('spikingjelly'),
           'lif_implementation': lif_info[0], 'fused': lif_info[1]}
    if device.type == 'cuda':
        env.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                   tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32)
    return env


def print_table(records):
    """The cases as a short table for a person, on stderr (stdout carries the JSON lines, for machines)."""
    console.status(f'{"case":15s} {"size":>7s} {"dtype":5s} {"step ms":>9s} {"peak MiB":>9s}')
    for r in records:
        console.status(f'{r["name"]:15s} {r["batch"]}x{r["size"]:<5d} {r["dtype"]:5s} {r["step_ms"]:9.1f} '
                       f'{r["peak_mem_mib"]:9.0f}')


def emit(record, sink):
    line = json.dumps(record)
    console.info(line)
    if sink:
        sink.write(line + '\n')


if __name__ == '__main__':
    main(sys.argv[1:])
