"""Fast paths (fast attention, speed switches) must compute what the reference path computes; the train-step
benchmark must run end to end. CPU only, tiny widths."""
import json
import os
import subprocess
import sys

import pytest
import torch
from spikingjelly.activation_based import neuron

import spikerir_plugin  # noqa: F401
from conftest import REPO_ROOT as REPO
from spikerir_plugin.archs.esdnet_arch import ESDNet
from spikerir_plugin.archs.spikerir_arch import SpikerIR
from spikerir_plugin.models import speed as train_speed

TOL = 1e-5

NETS = {
    'ESDNet': lambda attention: ESDNet(dim=8, en_num_blocks=(1, 1, 1, 1), de_num_blocks=(1, 1, 1, 1), T=4,
                                       attention=attention, reduction_c=4),
    'SpikerIR': lambda attention: SpikerIR(preset='tiny', T=4, attention=attention),
}


pytestmark = pytest.mark.usefixtures('one_thread')  # conftest: tiny tensors, one thread


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12)).item()


def twin_nets(arch, attention_a, attention_b):
    """(net with attention_a, reference net with attention_b, fp64 copy of the reference), equal weights."""
    torch.manual_seed(0)
    ref = NETS[arch](attention_b).train()
    other = NETS[arch](attention_a).train()
    other.load_state_dict(ref.state_dict(), strict=True)
    exact = NETS[arch](attention_b).train()
    exact.load_state_dict(ref.state_dict(), strict=True)
    return other, ref, exact.double()


def step(net, x, weight, speed=None):
    """forward + weighted-sum loss + backward + reset -> (output, input grad, {param name: grad})."""
    x = train_speed.prepare_input(x.clone(), speed).requires_grad_(True)
    out = net(x)
    (out * weight).sum().backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad(set_to_none=True)
    return out.detach(), x.grad, grads


def close(a, b, exact):
    """a equals the fp32 reference b to TOL, or (where fp32 rounding of b itself exceeds TOL, e.g. a cancelling
    sum in a tiny MLP's weight gradient) a is no farther from the fp64 result than b is."""
    return rel_err(a, b) < TOL or rel_err(a, exact) <= 2 * rel_err(b, exact) + TOL


def assert_same_step(net_a, net_b, exact, speed_a=None, steps=2):
    """Two consecutive steps give equal outputs, input grads and every parameter grad."""
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, w = torch.rand(2, 3, 16, 16, generator=gen), torch.randn(2, 3, 16, 16, generator=gen)
        out_a, gx_a, g_a = step(net_a, x, w, speed_a)
        out_b, gx_b, g_b = step(net_b, x, w)
        out_c, gx_c, g_c = step(exact, x.double(), w.double())
        assert rel_err(out_a, out_b) < TOL
        assert close(gx_a, gx_b, gx_c)
        assert g_a.keys() == g_b.keys()
        bad = {n: (rel_err(g_a[n], g_b[n]), rel_err(g_b[n], g_c[n])) for n in g_b if not close(g_a[n], g_b[n], g_c[n])}
        assert not bad, f'parameter gradients differ (rel. to reference, reference rel. to fp64): {bad}'
        assert gx_b.abs().sum() > 0 and all(g.abs().sum() > 0 for n, g in g_b.items() if 'sa.conv' in n)
    for (name, buf_a), buf_b in zip(net_a.named_buffers(), net_b.buffers()):  # tdBN running stats
        assert rel_err(buf_a, buf_b) < TOL, name


@pytest.mark.parametrize('arch', sorted(NETS))
def test_fast_attention_matches_spikingjelly_outputs_and_gradients(arch):
    fast_net, ref_net, exact = twin_nets(arch, 'fast', 'spikingjelly')
    assert any(type(m).__name__ == 'MultiDimensionalAttention' for m in ref_net.modules())
    assert any(type(m).__name__ == 'FastMultiDimensionalAttention' for m in fast_net.modules())
    assert_same_step(fast_net, ref_net, exact)


def test_channels_last_gives_equal_outputs_and_gradients():
    cl_net, ref_net, exact = twin_nets('ESDNet', 'fast', 'fast')
    speed = {'channels_last': True}
    train_speed.prepare_model(cl_net, speed)
    conv = cl_net.encoder_level1[0].residual[1]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    assert train_speed.prepare_input(torch.rand(1, 3, 8, 8), speed).is_contiguous(memory_format=torch.channels_last)
    assert_same_step(cl_net, ref_net, exact, speed_a=speed, steps=1)


def test_bf16_keeps_neuron_state_fp32_and_fp32_path_unchanged():
    torch.manual_seed(0)
    net = SpikerIR(preset='tiny', T=2, reduction_t=2).train()
    x = torch.rand(2, 3, 16, 16)
    lifs = [m for m in net.modules() if isinstance(m, neuron.LIFNode)]
    state_dtypes = set()  # a neuron's state takes its input's dtype; the forward hook sees the pre-hooked input
    for m in lifs:
        m.register_forward_hook(lambda mod, args, out: state_dtypes.add(args[0].dtype))
    ref = net(x)
    state_dtypes.clear()
    with train_speed.autocast_context('cpu', {'bf16': True}):
        net(x)
    assert state_dtypes == {torch.bfloat16}  # what spikingjelly does on its own under autocast
    train_speed.prepare_model(net, {'bf16': True})
    assert train_speed.keep_neuron_state_fp32(net) == 0  # idempotent: every neuron already hooked
    state_dtypes.clear()
    with train_speed.autocast_context('cpu', {'bf16': True}):
        out = net(x)
    assert state_dtypes == {torch.float32}  # the fused CUDA kernels need fp32 state
    assert torch.isfinite(out).all() and rel_err(out.float(), ref) < 0.1
    out.float().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    assert torch.equal(net(x), ref)  # hooks are inert on fp32 inputs


def test_autocast_context_switch():
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.rand(1, 3, 8, 8)
    with train_speed.autocast_context('cpu', None):
        assert conv(x).dtype == torch.float32
    with train_speed.autocast_context(torch.device('cpu'), {'bf16': True}):
        assert conv(x).dtype == torch.bfloat16


def test_maybe_compile_shares_parameters_and_keeps_state_dict_keys():
    torch.manual_seed(0)
    net = SpikerIR(preset='tiny', T=2, reduction_t=2, attention='none', enc_blocks=(0, 0, 0), dec_blocks=(0, 0, 0))
    keys = list(net.state_dict())
    assert train_speed.maybe_compile(net, {}) is net
    compiled = train_speed.maybe_compile(net, {'compile': {'backend': 'eager', 'fullgraph': True}})
    assert not isinstance(compiled, torch.nn.Module)
    x = torch.rand(1, 3, 16, 16)
    ref = net(x)
    ref.sum().backward()
    ref_grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    out = compiled(x)
    out.sum().backward()
    assert torch.allclose(out, ref, rtol=1e-6, atol=1e-7)
    assert all(torch.allclose(p.grad, g, rtol=1e-5, atol=1e-7) for p, g in zip(net.parameters(), ref_grads))
    assert list(net.state_dict()) == keys and not any('_orig_mod' in k for k in net.state_dict())


def test_speed_options_validation():
    assert train_speed.SpeedOptions.from_opt({'name': 'x'}) == train_speed.SpeedOptions()
    opts = train_speed.SpeedOptions.from_opt({'speed': {'bf16': True, 'compile': {'mode': 'max-autotune'}}})
    assert opts.bf16 and opts.compile_kwargs == {'mode': 'max-autotune'} and not opts.channels_last
    assert train_speed.SpeedOptions.from_dict({'compile': True}).compile_kwargs == {}
    assert train_speed.SpeedOptions().compile_kwargs is None
    assert train_speed.SpeedOptions.from_dict({'compile': None, 'bf16': None}) == train_speed.SpeedOptions()
    with pytest.raises(KeyError, match=r"unknown key\(s\) \['bfloat16'\].*channels_last.*bf16.*compile.*cuda_graph"):
        train_speed.SpeedOptions.from_dict({'bfloat16': True})
    with pytest.raises(KeyError, match=r"speed.compile: unknown key\(s\) \['mod'\].*backend"):
        train_speed.SpeedOptions.from_dict({'compile': {'mod': 'default'}})
    with pytest.raises(TypeError, match='speed.bf16 must be true or false'):
        train_speed.SpeedOptions.from_dict({'bf16': 'yes'})
    with pytest.raises(ValueError, match='cannot be combined'):
        train_speed.SpeedOptions.from_dict({'cuda_graph': True, 'compile': True})


def test_cuda_graph_on_cpu_raises_clear_error():
    def train_step(x):
        return x

    assert train_speed.cuda_graph_step(train_step, 'cpu', {}) is train_step
    with pytest.raises(RuntimeError, match='cuda_graph needs a CUDA device'):
        train_speed.cuda_graph_step(train_step, 'cpu', {'cuda_graph': True})
    with pytest.raises(RuntimeError, match='cuda_graph needs a CUDA device'):
        train_speed.prepare_model(torch.nn.Conv2d(3, 3, 1), {'cuda_graph': True})


def test_check_fused_lif_reports_the_cpu_loop_in_use():
    from spikerir_plugin.archs.neurons import spikingjelly_loops
    info, fused = train_speed.check_fused_lif('cpu')
    assert info == {'implementation': 'spikerir-cpu-loop', 'spikingjelly': 'torch-reference'} and fused is True
    with spikingjelly_loops():
        info, fused = train_speed.check_fused_lif('cpu')
    assert info['implementation'] == 'torch-reference' and fused is False


def test_train_step_benchmark_tiny_end_to_end(tmp_path):
    out_file = tmp_path / 'results.jsonl'
    cmd = [sys.executable, os.path.join(REPO, 'benchmarks', 'train_step.py'), '--device', 'cpu', '--tiny',
           '--cases', 'esdnet_sj,esdnet_fast,spikerir_tiny,kd_tiny', '--warmup', '1', '--iters', '1',
           '--out', str(out_file)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    header, cases = lines[0], [r for r in lines if 'name' in r]
    ratios = {r['ratio']: r for r in lines if 'ratio' in r}
    assert header['lif_implementation']['implementation'] == 'spikerir-cpu-loop' and header['fused'] is True
    assert [r['name'] for r in cases] == ['esdnet_sj', 'esdnet_fast', 'spikerir_tiny', 'kd_tiny']
    for r in cases:
        assert r['device'] == 'cpu' and r['dtype'] == 'fp32' and (r['batch'], r['size']) == (2, 32)
        assert r['step_ms'] > 0 and r['params'] > 0 and r['saved_for_backward_mib'] > 0
        assert r['peak_mem_kind'] == 'cpu_estimate_params_grads_adam_saved'
        assert r['peak_mem_mib'] > r['saved_for_backward_mib'] + 16 * r['params'] / 2 ** 20 - 0.1
        assert r['lif_impl'] == 'spikerir-cpu-loop' and r['lif_state_dtype'] == 'float32'
    assert cases[0]['params'] == cases[1]['params'] and cases[3]['teacher_params'] > 0
    assert cases[3]['params'] > cases[2]['params']  # the hint adapters train with the student
    assert set(ratios) == {'esdnet_fast/esdnet_sj', 'kd_tiny/spikerir_tiny'}
    esd = ratios['esdnet_fast/esdnet_sj']
    assert esd['step_ms_ratio'] == pytest.approx(cases[1]['step_ms'] / cases[0]['step_ms'], rel=1e-2)
    assert 'target_met' in ratios['kd_tiny/spikerir_tiny']
    assert out_file.read_text().splitlines() == proc.stdout.splitlines()
    assert header['torch'] == torch.__version__ and header['spikingjelly'].startswith('2.')
