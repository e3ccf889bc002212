"""neuron='plif': spikingjelly's ParametricLIFNode (learnt time constant) in the spiking blocks. At initialisation it
is the shipped LIF (tau 2), so a student started from an LIF checkpoint or its twin answers the same; its time
constants train; each call starts at rest."""
import torch

from spikerir_plugin.archs.neurons import StatelessParametricLIFNode
from spikerir_plugin.archs.spikerir_arch import SpikerIR


def _pair():
    torch.manual_seed(0)
    lif, plif = SpikerIR(preset='tiny', T=4), SpikerIR(preset='tiny', T=4, neuron='plif')
    missing, unexpected = plif.load_state_dict(lif.state_dict(), strict=False)
    return lif, plif, missing, unexpected


def test_plif_starts_as_the_lif_and_only_adds_one_time_constant_per_neuron():
    lif, plif, missing, unexpected = _pair()
    neurons = [n for n, m in plif.named_modules() if isinstance(m, StatelessParametricLIFNode)]
    assert not unexpected and sorted(missing) == sorted(f'{n}.w' for n in neurons) and neurons
    x = torch.rand(2, 3, 24, 20)
    lif.train(), plif.train()
    assert torch.allclose(plif(x), lif(x), atol=1e-6)


def test_plif_time_constants_get_gradients_and_calls_do_not_share_state():
    _, plif, _, _ = _pair()
    x = torch.rand(1, 3, 16, 16)
    plif.eval()
    with torch.no_grad():
        assert torch.equal(plif(x), plif(x))
    plif.train()
    plif(x).abs().mean().backward()
    grads = [m.w.grad for m in plif.modules() if isinstance(m, StatelessParametricLIFNode)]
    assert all(g is not None for g in grads) and any(float(g.abs()) > 0 for g in grads)
