"""Spike-driven convolutions of the fast CPU inference copy (spikerir_plugin/ops/spike_conv, src/spike_conv.c): the packing
neuron gives the spikes of the plugin's neurons bit for bit, a table convolution equals the dense convolution of
those spikes to float rounding (shapes, strides, paddings, channel counts that are not multiples of 8, sliced
tables, two threads), the fast copy uses them where they apply, and without a C compiler the copy falls back to
dense convolutions with a warning."""
import subprocess

import pytest
import torch
from conftest import PYTHON, subprocess_env
from torch import nn

import spikerir_plugin  # noqa: F401  (registers the archs)
from spikerir_plugin.ops import spike_conv
from spikerir_plugin.inference import build_inference_network
from spikerir_plugin.inference.layers import InferenceConv2d, InferenceNeuron
from spikerir_plugin.ops.neuron_loops import NeuronSpec, multi_step_spikes
from spikerir_plugin.archs.spikerir_arch import SpikerIR
from spikerir_plugin.tools.energy_report import make_input

LIF = NeuronSpec(tau=2.0, decay_input=False, v_threshold=0.15, v_reset=0.0, alpha=4.0, detach_reset=False)
IF = NeuronSpec(tau=None, decay_input=False, v_threshold=0.3, v_reset=0.0, alpha=4.0, detach_reset=False)


def membrane_input(channels, height, width, layout, steps=4):
    torch.manual_seed(channels * 100 + height)
    x = torch.randn(steps, 2, channels, height, width) * 0.3 + 0.05
    x[0, 0, :, 0, :3] = 0.15  # exactly at the LIF threshold at t = 0 (charged from rest: x itself)
    x[0, 1, :, 0, :3] = 0.3  # and at the IF threshold
    x[0, 1, :, 1, :2] = float('inf')  # overflow: fires, and the membrane is NaN from then on (h - h)
    x[1, 1, :, 2, :2] = float('nan')
    if layout == 'channels_last':  # a conv output with channels-last weights, seen per time step
        return x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (steps, 2))
    if layout == 'expanded':  # the image conv's output seen T times (stride 0), as the first block reads it
        return x[:1].expand(steps, -1, -1, -1, -1)
    return x


@pytest.fixture(scope='module')
def kernels():
    library = spike_conv.kernels()
    assert library is not None, 'the C kernels must build here (a C compiler is part of the test environment)'
    return library


@pytest.mark.parametrize('spec', [LIF, IF], ids=['lif', 'if'])
@pytest.mark.parametrize('channels, layout, steps', [(8, 'channels_last', 4), (16, 'contiguous', 4),
                                                     (12, 'channels_last', 3), (5, 'contiguous', 2),
                                                     (8, 'expanded', 4)])
def test_packing_neuron_fires_like_the_neuron(kernels, spec, channels, layout, steps):
    x = membrane_input(channels, 7, 9, layout, steps)
    packed = spike_conv.pack_spikes(x, spec)
    assert packed.bits.dtype == torch.uint8 and packed.bits.shape == (2 * steps, 9, 11, -(-channels // 8))
    border = torch.ones(9, 11, dtype=torch.bool)
    border[1:-1, 1:-1] = False
    assert not packed.bits[:, border].any()  # the zero padding of the convolutions
    spikes = multi_step_spikes(x, spec)
    assert torch.equal(packed.unpack(), spikes) and 0 < spikes.mean() < 0.9


@pytest.mark.parametrize('threads', [1, 2])
@pytest.mark.parametrize('cin, cout, kernel, stride, padding', [
    (8, 8, 3, 1, 1), (16, 16, 3, 2, 1), (32, 16, 1, 1, 0), (4, 4, 3, 1, 1), (12, 24, 3, 1, 1), (16, 3, 3, 1, 0),
    (32, 32, 3, 1, 1), (32, 40, 3, 2, 1), (16, 96, 1, 1, 0), (24, 16, 1, 2, 0)])
def test_table_convolution_equals_the_dense_convolution(kernels, threads, cin, cout, kernel, stride, padding):
    x = membrane_input(cin, 11, 10, 'channels_last').nan_to_num(0.0, 0.0, 0.0)  # finite membranes
    torch.manual_seed(cout)
    conv = nn.Conv2d(cin, cout, kernel, stride, padding)
    assert spike_conv.table_eligible(conv)
    table = spike_conv.SpikeTable(conv.weight, conv.bias)
    if (cin == 32 and kernel == 3) or cout > 64:
        assert len(table.slices) > 1  # a whole table would leave the cache, or the kernels' 64 channels
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = spike_conv.table_conv(spike_conv.pack_spikes(x, LIF), table, stride, padding)
    finally:
        torch.set_num_threads(saved)
    with torch.no_grad():
        ref = conv(multi_step_spikes(x, LIF).flatten(0, 1)).unflatten(0, (4, 2))
    assert out.shape == ref.shape and out.flatten(0, 1).is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=2e-6)


def test_tables_that_cannot_stay_in_cache_are_not_used():
    assert not spike_conv.table_eligible(nn.Conv2d(64, 64, 3, padding=1))  # 8 groups: even 8 outputs too large
    assert not spike_conv.table_eligible(nn.Conv2d(16, 16, 5, padding=2))
    assert not spike_conv.table_eligible(nn.Conv2d(16, 16, 3, padding=1, dilation=1, groups=2))
    assert spike_conv.table_eligible(nn.Conv2d(64, 32, 1))


def test_fast_copy_runs_spike_convolutions_where_they_apply(kernels):
    """SpikerIR tiny: the convolutions that read spikes run on packed spikes (level-3 convolutions of 32 -> 32
    channels with sliced tables), the image and head convolutions densely; the output stays as close to the eval
    forward as the dense fast copy is."""
    torch.manual_seed(0)
    net = SpikerIR(preset='tiny').eval()
    fast = build_inference_network(net, exact=False)
    dense = build_inference_network(net, exact=False, spike_tables=False)
    tables = {n for n, m in fast.named_modules() if isinstance(m, InferenceConv2d) and m.spike_table is not None}
    packing = {n for n, m in fast.named_modules() if isinstance(m, InferenceNeuron) and m.pack}
    assert 'encoder_level1.0.residual.1' in tables and 'encoder_level1.0.shortcut.0' in tables
    assert 'encoder_level3.0.residual.1' in tables  # 32 -> 32 channels: sliced, not excluded
    assert len(fast.get_submodule('encoder_level3.0.residual.1').spike_table.slices) == 4
    assert 'patch_embed.proj' not in tables and 'output' not in tables
    assert 'encoder_level1.0.residual.0' in packing and 'up2_1.up.0' in packing
    assert not any(m.spike_table is not None for m in dense.modules() if isinstance(m, InferenceConv2d))
    x = make_input((36, 44), 1, sigma=15)
    with torch.no_grad():
        ref, out, out_dense = net(x), fast(x), dense(x)
    diff, diff_dense = (out - ref).abs(), (out_dense - ref).abs()
    assert diff.median() < 1e-6 and diff_dense.median() < 1e-6
    psnr = 10 * torch.log10(1 / diff.double().square().mean().clamp_min(1e-30))
    assert psnr > 50


def test_without_a_compiler_the_fast_copy_keeps_dense_convolutions(tmp_path):
    script = (
        'import warnings, torch\n'
        'import spikerir_plugin\n'
        'from spikerir_plugin.archs.spikerir_arch import SpikerIR\n'
        'from spikerir_plugin.inference import build_inference_network\n'
        'from spikerir_plugin.inference.layers import InferenceConv2d\n'
        'torch.manual_seed(0)\n'
        'net = SpikerIR(dim=4, reduction_c=2).eval()\n'
        'with warnings.catch_warnings(record=True) as caught:\n'
        '    warnings.simplefilter("always")\n'
        '    fast = build_inference_network(net, exact=False)\n'
        'assert not any(m.spike_table is not None for m in fast.modules() if isinstance(m, InferenceConv2d))\n'
        'x = torch.rand(1, 3, 16, 16)\n'
        'with torch.no_grad():\n'
        '    assert (fast(x) - net(x)).abs().median() < 1e-6\n'
        'print([str(w.message) for w in caught])\n')
    env = subprocess_env(CC=str(tmp_path / 'no-such-compiler'), SPIKERIR_CACHE_DIR=str(tmp_path / 'cache'))
    result = subprocess.run([PYTHON, '-c', script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'spike-driven convolutions unavailable' in result.stdout and 'dense convolutions' in result.stdout
    assert not list((tmp_path / 'cache').glob('*.so'))


def test_without_openmp_the_rows_are_split_over_python_threads(tmp_path):
    """A compiler without OpenMP: the serial build is used, and two threads still give the dense results."""
    compiler = tmp_path / 'cc-without-openmp'
    compiler.write_text('#!/bin/sh\nfor a in "$@"; do [ "$a" = -fopenmp ] && exit 1; done\nexec cc "$@"\n')
    compiler.chmod(0o755)
    script = (
        'import torch\n'
        'from torch import nn\n'
        'from spikerir_plugin.ops import spike_conv\n'
        'from spikerir_plugin.ops.neuron_loops import NeuronSpec, multi_step_spikes\n'
        'assert not spike_conv.kernels().threaded\n'
        'torch.set_num_threads(2)\n'
        'torch.manual_seed(0)\n'
        'spec = NeuronSpec(2.0, False, 0.15, 0.0, 4.0, False)\n'
        'x = torch.randn(4, 2, 16, 40, 12) * 0.3\n'
        'conv = nn.Conv2d(16, 16, 3, 1, 1)\n'
        'out = spike_conv.table_conv(spike_conv.pack_spikes(x, spec), spike_conv.SpikeTable(conv.weight, conv.bias),'
        ' 1, 1)\n'
        'with torch.no_grad():\n'
        '    ref = conv(multi_step_spikes(x, spec).flatten(0, 1)).unflatten(0, (4, 2))\n'
        'torch.testing.assert_close(out, ref, rtol=1e-5, atol=2e-6)\n'
        'print("serial", spike_conv._pool[0])\n')
    env = subprocess_env(CC=str(compiler), SPIKERIR_CACHE_DIR=str(tmp_path / 'cache'), OMP_NUM_THREADS='2')
    result = subprocess.run([PYTHON, '-c', script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'serial 2' in result.stdout
    assert [p.name.endswith('-serial.so') for p in (tmp_path / 'cache').glob('*.so')] == [True]
