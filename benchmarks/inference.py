"""Time one restoration forward (eval, no grad, batch 1) of the spiking students against their ANN teachers, with
every network measured in this one process, round-robin, so that the ratios compare like with like on a busy box.

Networks (``--cases``): nafnet32 (NAFNet, ``preset='sidd-width32'``, the baseline of every ratio), restormer
(Restormer defaults), tiny / base (SpikerIR presets, T=4) and esdnet (ESDNet, released configuration). Modes of a
spiking network (``--modes``):
    spikingjelly  the arch in eval mode with spikingjelly's own neuron loops (the state before the fast path)
    eval          the arch in eval mode (its neurons run the fused CPU loops)
    exact         inference_network(net): the frozen inference copy, bit-equal outputs (the default path)
    fast-dense    build_inference_network(net, exact=False, spike_tables=False): batch norms folded, channels-
                  last oneDNN convolutions everywhere
    fast          inference_network(net, exact=False): as fast-dense, and on the CPU the convolutions that read
                  spikes run on bit-packed spikes by table look-ups (spikerir_plugin/ops/spike_conv) where their tables fit
    compiled      inference_network(net, compile=True): exact, neuron loops and attention tails through
                  torch.compile
    fast-compiled inference_network(net, exact=False, compile=True): both
For every spiking run it also reports the max abs difference from the eval forward on the same real photo
(scikit-image's astronaut), and for every run the time of its convolutions alone (``conv_ms``, the median over the
timed forwards of the summed convolution calls, measured by hooks around them; on CUDA in a forward of its own):
the dense-convolution floor of that run. Peak memory: on CUDA ``max_memory_allocated`` during one more forward;
on the CPU ``--memory`` runs each network in a fresh process and reports the growth of its peak resident memory
during one forward (in a long-lived process the allocator keeps freed memory, hiding a run's own peak). ``--profile``
prints the top operators of the given runs (torch.profiler, self CPU/CUDA time).

Examples (see benchmarks/README.md, "Inference"):
    python benchmarks/inference.py --threads 1,2 --sizes 256,512 --out inference_cpu.jsonl
    python benchmarks/inference.py --cases nafnet32,esdnet --modes eval,exact --sizes 256 --repeats 1
    python benchmarks/inference.py --device cuda --out inference_cuda.jsonl
    python benchmarks/inference.py --memory --sizes 256,512 --modes eval,exact,fast
    python benchmarks/inference.py --numerics --cases tiny,base --sizes 256 --threads 1
"""
import argparse
import contextlib
import json
import os
import resource
import statistics
import sys
import time

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import spikerir_plugin  # noqa: E402,F401  (registers the archs)
from spikerir_plugin.archs.esdnet_arch import ESDNet  # noqa: E402
from spikerir_plugin.inference import build_inference_network  # noqa: E402
from spikerir_plugin.archs.nafnet_arch import NAFNet  # noqa: E402
from spikerir_plugin.archs.neurons import spikingjelly_loops  # noqa: E402
from spikerir_plugin.archs.restormer_arch import Restormer  # noqa: E402
from spikerir_plugin.archs.spikerir_arch import SpikerIR  # noqa: E402
from spikerir_plugin.tools.energy_report import make_input  # noqa: E402
from spikerir_plugin.inference.cpu_memory import keep_freed_memory  # noqa: E402
from spikerir_plugin.inference import inference_network  # noqa: E402
from spikerir_plugin.utils import console  # noqa: E402

BASELINE = 'nafnet32'
BUILDERS = {
    'nafnet32': lambda: NAFNet(preset='sidd-width32'),
    'restormer': lambda: Restormer(),
    'tiny': lambda: SpikerIR(preset='tiny'),
    'base': lambda: SpikerIR(preset='base'),
    'esdnet': lambda: ESDNet(),
}
SPIKING = ('tiny', 'base', 'esdnet')
MODES = ('spikingjelly', 'eval', 'exact', 'fast-dense', 'fast', 'compiled', 'fast-compiled')


def runner(net, mode):
    """(callable, module whose convolutions are timed) of one mode."""
    if mode == 'spikingjelly':
        def forward(x):
            with spikingjelly_loops():
                return net(x)
        return forward, net
    if mode == 'eval':
        return net, net
    if mode == 'fast-dense':
        fast = build_inference_network(net, exact=False, spike_tables=False)
        return fast, fast
    fast = inference_network(net, exact=mode not in ('fast', 'fast-compiled'), compile='compiled' in mode)
    return fast, fast


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def conv_modules(module):
    return [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]


class ConvTimer(contextlib.AbstractContextManager):
    """Sums the wall time of the convolution modules of ``module`` while the block runs (pre/post hooks around
    each call; on CUDA each hook synchronises, so time CUDA convolutions in a forward of their own)."""

    def __init__(self, module, device):
        self.module, self.device, self.ms = module, device, 0.0

    def __enter__(self):
        start = {}

        def pre(m, _inp):
            sync(self.device)
            start[m] = time.perf_counter()

        def post(m, _inp, _out):
            sync(self.device)
            self.ms += (time.perf_counter() - start.pop(m)) * 1e3

        self.handles = [h for m in conv_modules(self.module) for h in (m.register_forward_pre_hook(pre),
                                                                       m.register_forward_hook(post))]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def cuda_peak_memory_mib(fn, x, device):
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn(x)
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20


def cpu_peak_memory(args, sink):
    """Peak resident-memory growth of one forward (MiB), each (case, mode, size) in a fresh process: the network
    and its inference copy are built first, then ru_maxrss is read before and after the forward. In a long-lived
    process freed memory stays with the allocator, so only a fresh process shows a run's own peak."""
    import subprocess
    for size in args.sizes:
        for case in args.cases:
            for mode in (args.modes if case in SPIKING else ('eval',)):
                child = subprocess.run([sys.executable, __file__, '--memory-child', f'{case}:{mode}:{size}'],
                                       capture_output=True, text=True, check=True)
                record = json.loads(child.stdout.strip().splitlines()[-1])
                console.status(f"{case:9s} {mode:13s} {size:4d} peak memory growth "
                               f"{record['peak_rss_growth_mib']:.0f} MiB")
                if sink:
                    sink.write(json.dumps(record) + '\n')


def memory_child(spec):
    case, mode, size = spec.split(':')
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = BUILDERS[case]().eval()
    fn, _ = runner(net, mode)
    x = make_input(int(size))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.no_grad():
        fn(x)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    console.info(json.dumps({'memory': case, 'mode': mode, 'size': int(size),
                             'peak_rss_growth_mib': (after - before) / 1024}))


def run_config(args, device, threads, size, sink):
    """Every (case, mode) at one size and thread count; returns the JSON records."""
    if device.type == 'cpu':
        torch.set_num_threads(threads)
    x = make_input(size).to(device)
    runs = []  # (case, mode, fn, conv module, net)
    for case in args.cases:
        torch.manual_seed(0)
        net = BUILDERS[case]().to(device).eval()
        for mode in (args.modes if case in SPIKING else ('eval',)):
            fn, module = runner(net, mode)
            runs.append((case, mode, fn, module, net))
    load_before = os.getloadavg()
    times = {(c, m): [] for c, m, *_ in runs}
    extra = {}
    reference = {}  # case -> output of the arch in eval mode
    with torch.no_grad():
        for case, mode, fn, module, net in runs:  # warm-up (oneDNN primitives, compilation) and checks
            out = fn(x)
            sync(device)
            info = {}
            if case in SPIKING:
                if case not in reference:
                    reference[case] = out if mode == 'eval' else net(x)
                info['max_abs_diff_vs_eval'] = float((out - reference[case]).abs().max())
            if device.type == 'cuda':  # convolutions timed in a forward of their own (the hooks synchronise)
                with ConvTimer(module, device) as timer:
                    fn(x)
                info['conv_ms'] = timer.ms
                info['peak_mem_mib'] = cuda_peak_memory_mib(fn, x, device)
            extra[(case, mode)] = info
        reference.clear()
        conv_times = {key: [] for key in times}
        faults = {key: [] for key in times}  # (minor page faults, system seconds) of each timed forward
        for _ in range(args.repeats):  # round-robin: every run sees the same load
            for case, mode, fn, module, _net in runs:
                with ConvTimer(module, device) if device.type == 'cpu' else contextlib.nullcontext() as timer:
                    sync(device)
                    usage = resource.getrusage(resource.RUSAGE_SELF)
                    start = time.perf_counter()
                    fn(x)
                    sync(device)
                    times[(case, mode)].append((time.perf_counter() - start) * 1e3)
                    after = resource.getrusage(resource.RUSAGE_SELF)
                    faults[(case, mode)].append((after.ru_minflt - usage.ru_minflt, after.ru_stime - usage.ru_stime))
                if timer is not None:
                    conv_times[(case, mode)].append(timer.ms)
        for key, values in conv_times.items():
            if values:
                extra[key]['conv_ms'] = statistics.median(values)
        for key, values in faults.items():  # fresh pages of large tensors: the kernel zeroes them (system time)
            extra[key]['minor_faults'] = statistics.median(v[0] for v in values)
            extra[key]['system_ms'] = statistics.median(v[1] for v in values) * 1e3
    load_after = os.getloadavg()
    base_times = times.get((BASELINE, 'eval'))
    records = []
    for case, mode, fn, module, net in runs:
        t = times[(case, mode)]
        record = {'case': case, 'mode': mode, 'device': device_name(device), 'threads': threads if
                  device.type == 'cpu' else None, 'size': size, 'params': sum(p.numel() for p in net.parameters()),
                  'ms_median': statistics.median(t), 'ms_min': min(t), 'ms_max': max(t), 'repeats': len(t),
                  'load_avg_1min': [load_before[0], load_after[0]], 'allocator_env': allocator_env(),
                  'keep_freed_memory': args.keep_freed_memory,
                  **extra[(case, mode)]}
        if base_times:
            ratios = [a / b for a, b in zip(t, base_times)]  # same round, same load
            record.update(ratio_vs_nafnet32=statistics.median(ratios), ratio_min=min(ratios), ratio_max=max(ratios))
            if 'conv_ms' in record:  # the time of this run's convolutions alone, over the baseline's whole time
                record['conv_floor_ratio_vs_nafnet32'] = record['conv_ms'] / statistics.median(base_times)
        records.append(record)
        emit(record, sink)
    if args.profile:
        for case, mode, fn, *_ in runs:
            if f'{case}:{mode}' in args.profile:
                console.status(f'-- top operators, {case} {mode}, {size}x{size}, {threads} thread(s)')
                console.info(profile_table(fn, x, device, args.profile_rows))
    return records


def with_batch_norm_statistics(net, device):
    """Random-init nets have identity batch norms in eval mode; give them non-trivial affines and running statistics
    (collected in train mode on noisy real photos) so that the numerics check sees trained-like conditions."""
    torch.manual_seed(0)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
            with torch.no_grad():
                m.weight.mul_(1 + 0.3 * torch.randn_like(m.weight))
                m.bias.normal_(0, 0.05)
    net.train()
    with torch.no_grad():
        net(make_input(64, 4, sigma=15).to(device))
    return net.eval()


def numerics(args, device, size, sink):
    """exact and fast copies against the eval forward on four real photos: max abs difference, pixels off by more
    than 1e-5, spikes that differ, PSNR between the outputs."""
    from spikingjelly.activation_based.neuron import BaseNode
    from spikerir_plugin.inference.layers import InferenceNeuron
    from spikerir_plugin.ops.spike_conv import PackedSpikes
    x = make_input(size, 4, sigma=15).to(device)
    for case in [c for c in args.cases if c in SPIKING]:
        torch.manual_seed(0)
        net = with_batch_norm_statistics(BUILDERS[case]().to(device), device)
        spikes = {}

        def record(tag, name):  # packed spikes (spike-table convolutions) are compared unpacked
            return lambda m, i, o: spikes.setdefault(name, {}).__setitem__(
                tag, o.unpack() if isinstance(o, PackedSpikes) else o.clone())
        hooks = [m.register_forward_hook(record('eval', n)) for n, m in net.named_modules() if isinstance(m, BaseNode)]
        with torch.no_grad():
            ref = net(x)
        for h in hooks:
            h.remove()
        for mode in ('exact', 'fast-dense', 'fast'):
            fast = runner(net, mode)[0]
            hooks = [m.register_forward_hook(record(mode, n)) for n, m in fast.named_modules()
                     if isinstance(m, InferenceNeuron)]
            with torch.no_grad():
                out = fast(x)
            for h in hooks:
                h.remove()
            diff = (out - ref).abs()
            flips = sum(int((v['eval'] != v[mode]).sum()) for v in spikes.values() if mode in v)
            total = sum(v['eval'].numel() for v in spikes.values())
            mse = float(diff.double().square().mean())
            record_ = {'numerics': case, 'mode': mode, 'size': size, 'photos': 4, 'max_abs_diff': float(diff.max()),
                       'pixels_off_1e-5': int((diff > 1e-5).sum()), 'pixels': diff.numel(), 'spike_flips': flips,
                       'spikes_total': total, 'psnr_vs_eval_db': 10 * torch.log10(torch.tensor(1 / mse)).item()
                       if mse else float('inf')}
            console.info(json.dumps(record_))
            if sink:
                sink.write(json.dumps(record_) + '\n')


def profile_table(fn, x, device, rows):
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
    with torch.no_grad(), profile(activities=activities) as prof:
        fn(x)
        sync(device)
    key = 'self_cuda_time_total' if device.type == 'cuda' else 'self_cpu_time_total'
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def device_name(device):
    return torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'


def emit(record, sink):
    line = json.dumps(record)
    if sink:
        sink.write(line + '\n')
        sink.flush()
    ratio = f"{record['ratio_vs_nafnet32']:.3f}x" if 'ratio_vs_nafnet32' in record else '-'
    conv = f"{record['conv_ms']:.0f}" if 'conv_ms' in record else '-'
    diff = f"{record['max_abs_diff_vs_eval']:.1e}" if 'max_abs_diff_vs_eval' in record else '-'
    mem = f"mem {record['peak_mem_mib']:.0f} MiB  " if 'peak_mem_mib' in record else ''
    console.info(f"{record['case']:9s} {record['mode']:13s} {record['size']:4d} thr {record['threads'] or '-'}  "
                 f"{record['ms_median']:9.1f} ms (min {record['ms_min']:.1f}, max {record['ms_max']:.1f})  "
                 f"vs nafnet32 {ratio}  conv {conv} ms  sys {record.get('system_ms', 0):.0f} ms  {mem}diff {diff}  "
                 f"load {record['load_avg_1min'][0]:.1f}/{record['load_avg_1min'][1]:.1f}")


def allocator_env():
    """The environment settings that change how CPU tensors get their memory (glibc malloc tunables, PyTorch's
    transparent-huge-page switch): they decide how many page faults a forward takes (benchmarks/README.md)."""
    return {k: v for k, v in os.environ.items() if k.startswith('MALLOC_') or k in ('THP_MEM_ALLOC_ENABLE',
                                                                                      'LD_PRELOAD')}


def parse_list(text, valid, flag, cast=str):
    items = [cast(v) for v in text.split(',') if v]
    bad = [v for v in items if valid is not None and v not in valid]
    if bad:
        raise SystemExit(f'{flag}: unknown {bad}; valid: {",".join(map(str, valid))}')
    return items


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    p.add_argument('--cases', default='nafnet32,restormer,tiny,base,esdnet')
    p.add_argument('--modes', default='spikingjelly,eval,exact,fast', help=f'of {",".join(MODES)}')
    p.add_argument('--sizes', default='256,512', help='square input sides')
    p.add_argument('--threads', default='1,2', help='CPU thread counts (ignored on CUDA)')
    p.add_argument('--repeats', type=int, default=3, help='timed forwards per run, after one warm-up')
    p.add_argument('--profile', default='tiny:exact,tiny:fast', help='CASE:MODE runs to profile (empty: none)')
    p.add_argument('--profile-rows', type=int, default=12)
    p.add_argument('--memory', action='store_true', help='CPU peak memory of one forward per run, each in a fresh '
                   'process, instead of timing')
    p.add_argument('--memory-child', default=None, help=argparse.SUPPRESS)
    p.add_argument('--numerics', action='store_true', help='compare exact/fast copies with the eval forward on '
                   'real photos (trained-like batch-norm statistics) instead of timing')
    p.add_argument('--keep-freed-memory', action='store_true', help="glibc malloc keeps freed memory (as "
                   "spikerir-restore and spikerir-energy do on the CPU): no page faults after the warm-up forward")
    p.add_argument('--out', default=None, help='JSON lines file')
    a = p.parse_args(argv)
    a.cases = parse_list(a.cases, BUILDERS, '--cases')
    a.modes = parse_list(a.modes, MODES, '--modes')
    a.sizes = parse_list(a.sizes, None, '--sizes', int)
    a.threads = parse_list(a.threads, None, '--threads', int) if a.device == 'cpu' else [0]
    a.profile = [v for v in a.profile.split(',') if v]
    return a


def main(argv=None):
    args = parse_args(argv)
    if args.memory_child:
        return memory_child(args.memory_child)
    device = torch.device(args.device)
    if args.keep_freed_memory and not keep_freed_memory():
        raise SystemExit('--keep-freed-memory: this C library is not glibc; set its allocator options instead')
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA device is visible to torch')
    console.info(json.dumps({'torch': torch.__version__, 'device': device_name(device), 'cpu_count': os.cpu_count(),
                             'allocator_env': allocator_env(), 'keep_freed_memory': args.keep_freed_memory}))
    sink = open(args.out, 'w') if args.out else None
    records = []
    try:
        for threads in args.threads:
            for size in args.sizes:
                if args.memory:
                    if threads == args.threads[0]:
                        cpu_peak_memory(args, sink)
                    break
                if args.numerics:
                    if device.type == 'cpu':
                        torch.set_num_threads(threads)
                    numerics(args, device, size, sink)
                else:
                    records += run_config(args, device, threads, size, sink)
    finally:
        if sink:
            sink.close()
    return records


if __name__ == '__main__':
    main()
