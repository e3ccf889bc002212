"""Inference fast path: fused neuron loops (spikes and surrogate gradients equal spikingjelly's), the frozen
inference copies of SpikerIR / ESDNet / SPIDEN (outputs equal the arch in eval mode), caching, save/load, the entry
point, the energy report's counts and keeping freed CPU memory."""
import io
import json
import resource
import subprocess

import pytest
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from conftest import PYTHON, subprocess_env
from spikingjelly.activation_based import neuron
from torch import nn

import spikerir_plugin  # noqa: F401  (registers the archs)
from spikerir_plugin.inference import build_inference_network
from spikerir_plugin.inference.layers import InferenceNeuron
from spikerir_plugin.archs.neurons import StatelessIFNode, StatelessLIFNode, spikingjelly_loops
from spikerir_plugin.tools.energy_report import make_input, measure_energy
from spikerir_plugin.inference import inference_network

SPIKING = {  # small configurations covering both neuron kinds, the three attentions and both shortcuts
    'SpikerIR': dict(dim=4, T=4, reduction_c=2),
    'SpikerIR-if-sj': dict(dim=4, neuron='if', attention='spikingjelly', T=4, reduction_c=2),
    'SpikerIR-analog-none': dict(dim=4, shortcut='analog', attention='none', T=3),
    'ESDNet': dict(dim=4, en_num_blocks=[1, 1, 1, 1], de_num_blocks=[1, 1, 1, 1], T=4, reduction_c=2),
    'SPIDEN': dict(width=8, depth=4, T=3, v_threshold=0.3),
}


pytestmark = pytest.mark.usefixtures('one_thread')  # conftest: tiny tensors, one thread


def trained_like(name):
    """A registered spiking arch with non-trivial batch-norm affines and running statistics (collected in train
    mode on noisy real photos), in eval mode: a stand-in for trained weights."""
    torch.manual_seed(0)
    net = ARCH_REGISTRY.get(name.split('-')[0])(**SPIKING[name])
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average
            with torch.no_grad():
                m.weight.mul_(1 + 0.3 * torch.randn_like(m.weight))
                m.bias.normal_(0, 0.05)
    net.train()
    with torch.no_grad():
        net(make_input(24, 2, sigma=15))
    return net.eval()


def spike_rates(net, x):
    rates = []
    hooks = [m.register_forward_hook(lambda m, i, o: rates.append(o.mean().item())) for m in net.modules()
             if isinstance(m, (neuron.BaseNode, InferenceNeuron))]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return rates


# ------------------------------------------------------------------------------------------------ neuron loops
NEURONS = {
    'lif-plugin': (neuron.LIFNode, StatelessLIFNode, dict(tau=2.0, decay_input=False, v_threshold=0.15)),
    'if-plugin': (neuron.IFNode, StatelessIFNode, dict(v_threshold=0.15)),
    'lif-decay-input': (neuron.LIFNode, StatelessLIFNode, dict(tau=2.0, decay_input=True, v_threshold=0.3)),
    'lif-tau3': (neuron.LIFNode, StatelessLIFNode, dict(tau=3.0, decay_input=False, v_threshold=0.2)),
    'lif-detach-reset': (neuron.LIFNode, StatelessLIFNode, dict(tau=2.0, v_threshold=0.15, detach_reset=True)),
}


def neuron_input(channels_last=False):
    torch.manual_seed(1)
    x = torch.randn(4, 2, 5, 7, 9) * 0.3 + 0.1
    x[1, 0, 0, :3] = 0.15  # membranes exactly at a threshold at t = 0
    x[:, 1, 2] = 0.0  # a silent plane
    if channels_last:  # a conv output with channels-last weights, seen per time step
        x = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (4, 2))
    return x


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('name', NEURONS)
def test_fused_neuron_equals_spikingjelly_forward_and_gradient(name, channels_last):
    library_cls, plugin_cls, kwargs = NEURONS[name]
    x = neuron_input(channels_last)
    grad = torch.randn(x.shape)
    reference = library_cls(step_mode='m', **kwargs)
    x_ref = x.clone().requires_grad_()
    spikes_ref = reference(x_ref)
    spikes_ref.backward(grad)
    fused = plugin_cls(step_mode='m', **kwargs)
    x_fused = x.clone().requires_grad_()
    spikes = fused(x_fused)
    assert type(spikes.grad_fn).__name__.startswith('_FusedNeuron')  # the fused loop ran, not the library's
    spikes.backward(grad)
    assert 0 < spikes.mean() < 1
    assert torch.equal(spikes, spikes_ref)
    assert torch.equal(x_fused.grad, x_ref.grad)
    assert isinstance(fused.v, float)  # back at rest after the call
    with torch.no_grad():
        assert torch.equal(fused(x), spikes_ref) and torch.equal(fused(x), spikes_ref)


def test_training_step_of_an_arch_is_unchanged():
    """Forward and every parameter gradient of a SpikerIR training step equal those with spikingjelly's loops."""
    def step(net):
        net.train()
        out = net(make_input(16, 2, sigma=10))
        out.square().mean().backward()
        return out.detach(), {n: p.grad for n, p in net.named_parameters()}

    net = trained_like('SpikerIR')
    fused_out, fused_grads = step(net)
    net.zero_grad(set_to_none=True)
    with spikingjelly_loops():
        ref_out, ref_grads = step(net)
    assert torch.equal(fused_out, ref_out)
    assert all(torch.equal(fused_grads[n], ref_grads[n]) for n in ref_grads)


# ------------------------------------------------------------------------------------------- inference copies
@pytest.mark.parametrize('name', SPIKING)
def test_inference_copy_equals_eval_forward(name):
    """Bit-equal outputs on real photos, several and odd sizes, batch 2; the arch itself is left untouched."""
    net = trained_like(name)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    fast = inference_network(net)
    assert net.training and fast is not net  # the arch keeps its mode
    net.eval()
    for size, batch, layout in [((32, 32), 2, torch.channels_last), ((21, 26), 1, torch.contiguous_format),
                                ((9, 13), 2, torch.channels_last)]:
        x = make_input(size, batch, sigma=15).contiguous(memory_format=layout)  # photos arrive channels-last
        with torch.no_grad():
            ref, out = net(x), fast(x)
        assert torch.equal(out, ref), f'{name} {size}: max abs diff {(out - ref).abs().max().item():.3g}'
    rates = spike_rates(fast, x)
    assert rates == spike_rates(net, x) and 0 < sum(rates) / len(rates) < 0.9
    assert net.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


@pytest.mark.parametrize('name', ['SpikerIR', 'ESDNet'])
def test_inexact_copy_is_close(name):
    """exact=False (folded, channels-last convolutions): equal to float rounding except near spikes that flipped at
    the threshold; structure checks: every batch norm folded, convolutions channels-last."""
    net = trained_like(name)
    fast = inference_network(net, exact=False)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) or type(m).__name__ == 'InferenceBatchNorm'
                   for m in fast.modules())
    x = make_input((40, 44), 1, sigma=15)
    with torch.no_grad():
        diff = (fast(x) - net(x)).abs()
    psnr = 10 * torch.log10(1 / diff.double().square().mean().clamp_min(1e-30))
    assert diff.median() < 1e-6 and psnr > 50


@pytest.mark.parametrize('name', ['SpikerIR', 'SpikerIR-if-sj'])
def test_compiled_copies_equal_their_eager_copies(name):
    """compile=True (torch.compile'd neuron loops and attention passes, a C++ compiler on the CPU): the exact copy
    still equals the eval forward bit for bit; the fast one (whose compiled spatial statistics may round
    differently) stays as close to the eager fast copy as that copy is to the eval forward; two sizes (the second
    runs the shape-generic kernels)."""
    net = trained_like(name)
    exact, fast = inference_network(net, compile=True), inference_network(net, exact=False, compile=True)
    assert all(m.compiled for m in (*exact.modules(), *fast.modules()) if hasattr(m, 'compiled'))
    fast_eager = build_inference_network(net, exact=False)
    for size in [(32, 32), (21, 26)]:
        x = make_input(size, 1, sigma=15)
        with torch.no_grad():
            ref, out = net(x), exact(x)
            assert torch.equal(out, ref), f'{size}: max abs diff {(out - ref).abs().max().item():.3g}'
            diff = (fast(x) - fast_eager(x)).abs()
        psnr = 10 * torch.log10(1 / diff.double().square().mean().clamp_min(1e-30))
        assert diff.median() < 1e-6 and psnr > 50, f'{size}: max abs diff {diff.max().item():.3g}'


def test_fused_attention_equals_the_training_module():
    """The fast compiled attention (statistics of the gated map without writing it, one pass for both gates, ReLU
    and residual) against FastMultiDimensionalAttention + residual on a channels-last map, and the exact
    attention bit for bit."""
    from spikerir_plugin.inference.layers import InferenceAttention
    from spikerir_plugin.archs.spiking_blocks import FastMultiDimensionalAttention
    torch.manual_seed(3)
    module = FastMultiDimensionalAttention(T=4, C=8, reduction_t=2, reduction_c=2).eval()
    y = torch.randn(4, 2, 13, 17, 8).permute(0, 1, 4, 2, 3)  # [T, B, C, H, W], channels-last steps
    shortcut, residual = torch.randn_like(y), torch.randn_like(y)
    with torch.no_grad():
        ref = module(y + shortcut) + residual
        fused = InferenceAttention(module, compiled=True, exact=False)
        out = fused(y.clone(), residual, addend=shortcut)
        y, shortcut, residual = y.contiguous(), shortcut.contiguous(), residual.contiguous()  # the arch's layout
        exact_ref = module(y + shortcut) + residual
        exact = InferenceAttention(module)(y.clone(), residual, addend=shortcut)
    assert fused.fused and out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    assert torch.equal(exact, exact_ref)


def test_copy_is_cached_and_rebuilt_after_training():
    net = trained_like('SpikerIR')
    x = make_input(24, 1)
    first = inference_network(net)
    assert inference_network(net) is first and inference_network(first) is first
    with torch.no_grad():
        before = first(x)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net.train()
    net(make_input(16, 1, sigma=10)).mean().backward()
    opt.step()
    net.eval()
    second = inference_network(net)
    assert second is not first
    with torch.no_grad():
        assert torch.equal(second(x), net(x)) and not torch.equal(second(x), before)
        assert torch.equal(first(x), before)  # a kept copy is a snapshot
    assert inference_network(net, exact=False) is not second  # options are part of the cache key
    with pytest.raises(RuntimeError, match='no_grad'):
        second(x.clone().requires_grad_())


@pytest.mark.parametrize('exact', [True, False])
def test_inference_copy_survives_save_and_load(exact):
    """A copy rebuilt from a saved checkpoint computes the same outputs; saving never sees the folded weights."""
    net = trained_like('ESDNet')
    keys = list(net.state_dict())
    x = make_input((23, 30), 1, sigma=15)
    with torch.no_grad():
        out = inference_network(net, exact=exact)(x)
    assert list(net.state_dict()) == keys
    buffer = io.BytesIO()
    torch.save({'params': net.state_dict()}, buffer)
    buffer.seek(0)
    loaded = ARCH_REGISTRY.get('ESDNet')(**SPIKING['ESDNet'])
    loaded.load_state_dict(torch.load(buffer)['params'], strict=True)
    with torch.no_grad():
        assert torch.equal(build_inference_network(loaded, exact=exact)(x), out)
        if exact:
            assert torch.equal(loaded.eval()(x), out)


def test_entry_point_for_other_networks():
    naf = ARCH_REGISTRY.get('NAFNet')(width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1])
    naf.train()
    assert inference_network(naf) is naf and not naf.training
    with pytest.raises(ValueError, match='SpikerIR, ESDNet, SPIDEN'):
        inference_network(naf, exact=False)
    net = trained_like('SPIDEN')
    assert inference_network(nn.DataParallel(net)) is inference_network(net)


def test_energy_report_counts_equal_the_arch():
    """spikerir-energy measures the inference copy; every row, rate and total equals measuring the arch."""
    net = trained_like('SpikerIR')
    x = make_input(24, 1)
    fast, plain = measure_energy(net, inputs=x), measure_energy(net, inputs=x, inference_copy=False)
    assert fast['layers'] == plain['layers'] and fast['neurons'] == plain['neurons']
    assert fast['totals'] == plain['totals'] and fast['first_layer'] == plain['first_layer']
    assert fast['totals']['synops'] > 0 and fast['totals']['macs'] > 0


KEEP_FREED_MEMORY_PROBE = '''
import json, resource, sys, torch
from spikerir_plugin.inference.cpu_memory import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == 'keep' else None
def page_faults_of_a_large_tensor():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(16 << 20)  # 64 MiB, freed again at once
    del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps([kept, [page_faults_of_a_large_tensor() for _ in range(6)]]))
'''


@pytest.mark.parametrize('mode', ['default', 'keep'])
def test_keep_freed_memory_stops_page_faults(mode):
    """keep_freed_memory (spikerir-restore and spikerir-energy on the CPU): a freed 64 MiB tensor's pages are
    reused by the next ones instead of being mapped (and zeroed) again; glibc's defaults map them every time.
    Each mode in a fresh process (the setting is process-wide), glibc's malloc variables cleared. The heap may
    need a second round to settle (an allocation made in between can pin the first block below the top)."""
    env = {k: v for k, v in subprocess_env().items() if not k.startswith('MALLOC_')}
    proc = subprocess.run([PYTHON, '-c', KEEP_FREED_MEMORY_PROBE, mode], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    kept, faults = json.loads(proc.stdout.strip().splitlines()[-1])
    pages = (64 << 20) // resource.getpagesize()
    if mode == 'keep':
        assert kept is True and sum(f < pages // 100 for f in faults[1:]) >= 3, faults
    else:
        assert kept is None and min(faults) > pages // 2, faults
