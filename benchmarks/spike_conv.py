"""Time the spike-driven convolution (spikerir_plugin/ops/spike_conv) against the neuron + oneDNN convolution it replaces, one
layer at a time, for the layer shapes of SpikerIR `tiny` and `base` at a 256x256 input (T=4, batch 1), every
variant in this one process:
    dense   the neuron writing float spikes (the fused CPU loop) + the folded channels-last oneDNN convolution
    table   the packing neuron (bits) + table look-ups, tables sliced by output channels to stay in cache
    whole   the same with one table for all output channels (no slicing), for the layers whose table is larger
Ratios below 1 mean the spike-driven pair is faster. Membrane inputs are Gaussian (firing rate about 0.25).

    python benchmarks/spike_conv.py --threads 1 --repeats 7
"""
import argparse
import os
import statistics
import sys
import time

import torch
from torch import nn

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from spikerir_plugin.ops import spike_conv  # noqa: E402
from spikerir_plugin.ops.neuron_loops import NeuronSpec, multi_step_spikes  # noqa: E402
from spikerir_plugin.inference.cpu_memory import keep_freed_memory  # noqa: E402
from spikerir_plugin.utils import console  # noqa: E402

LIF = NeuronSpec(tau=2.0, decay_input=False, v_threshold=0.15, v_reset=0.0, alpha=4.0, detach_reset=False)
# (input channels, output channels, side of the input, kernel, stride): the spike-reading convolutions of the
# presets at a 256x256 image (level 1 at 256, level 2 at 128, level 3 at 64)
LAYERS = [
    (8, 8, 256, 3, 1), (8, 16, 256, 3, 2), (16, 16, 128, 3, 1), (16, 8, 256, 3, 1), (16, 16, 256, 3, 1),
    (16, 32, 256, 3, 2), (32, 32, 64, 3, 1), (32, 16, 128, 1, 1), (32, 16, 256, 3, 1), (32, 32, 128, 3, 1),
    (32, 32, 256, 3, 1), (64, 32, 64, 1, 1), (32, 64, 128, 3, 2), (64, 64, 64, 3, 1),
]


def median_ms(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--repeats', type=int, default=7)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the restore command does: no page faults for fresh outputs
    if spike_conv.kernels() is None:
        sys.exit('the spike-driven convolution kernels could not be built (a C compiler is needed)')
    console.status(f'{args.threads} thread(s), median of {args.repeats}; ms of neuron + convolution; ratio vs dense')
    console.info(f'{"layer":>22} {"slices":>6} {"dense":>7} {"table":>7} {"ratio":>6} {"whole":>7} {"ratio":>6}')
    torch.manual_seed(0)
    for cin, cout, side, k, stride in LAYERS:
        x = (torch.randn(4, 1, side, side, cin) * 0.3 + 0.05).permute(0, 1, 4, 2, 3)  # channels-last steps
        conv = nn.Conv2d(cin, cout, k, stride, k // 2).eval()
        conv.weight.data = conv.weight.data.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            dense = median_ms(lambda: conv(multi_step_spikes(x, LIF, out=torch.empty_like(x)).flatten(0, 1)),
                            args.repeats)
            row = f'{cin:>3} -> {cout:>2} @{side:>3} k{k} s{stride}'
            whole = spike_conv.SpikeTable(conv.weight, conv.bias, max_bytes=1 << 40)  # one slice, any size
            whole_ms = median_ms(lambda: spike_conv.table_conv(spike_conv.pack_spikes(x, LIF), whole, stride, k // 2),
                               args.repeats)
            if spike_conv.table_eligible(conv):
                table = spike_conv.SpikeTable(conv.weight, conv.bias)
                sliced = median_ms(lambda: spike_conv.table_conv(spike_conv.pack_spikes(x, LIF), table, stride,
                                                               k // 2), args.repeats)
                console.info(f'{row:>22} {len(table.slices):>6} {dense:7.2f} {sliced:7.2f} {sliced / dense:6.2f} '
                             f'{whole_ms:7.2f} {whole_ms / dense:6.2f}')
            else:
                console.info(f'{row:>22} {"-":>6} {dense:7.2f} {"dense":>7} {"":>6} {whole_ms:7.2f} '
                             f'{whole_ms / dense:6.2f}')


if __name__ == '__main__':
    main()
