"""neuron='lif_vth': the blocks' LIF with a threshold learnt per layer. It starts as the shipped LIF, fires as an LIF
whose threshold is the learnt one, its thresholds get gradients, and the inference copy answers as it does."""
import math

import torch

from spikerir_plugin.archs.neurons import StatelessLearntThresholdLIFNode, StatelessLIFNode
from spikerir_plugin.archs.spikerir_arch import SpikerIR
from spikerir_plugin.inference import build_inference_network


def test_a_learnt_threshold_fires_as_an_lif_with_that_threshold():
    node = StatelessLearntThresholdLIFNode(tau=2.0, decay_input=False, v_threshold=0.15, step_mode='m')
    with torch.no_grad():
        node.log_threshold.fill_(math.log(2.0))
    reference = StatelessLIFNode(tau=2.0, decay_input=False, v_threshold=0.3, step_mode='m')
    x = torch.rand(4, 2, 3, 8, 8) * 0.6
    spikes = node(x)
    assert torch.equal(spikes, reference(x)) and 0 < float(spikes.detach().mean()) < 1
    assert abs(float(node.threshold) - 0.3) < 1e-6


def test_lif_vth_starts_as_the_lif_and_learns_one_threshold_per_neuron():
    torch.manual_seed(0)
    lif, learnt = SpikerIR(preset='tiny', T=4), SpikerIR(preset='tiny', T=4, neuron='lif_vth')
    missing, unexpected = learnt.load_state_dict(lif.state_dict(), strict=False)
    neurons = [n for n, m in learnt.named_modules() if isinstance(m, StatelessLearntThresholdLIFNode)]
    assert neurons and not unexpected and sorted(missing) == sorted(f'{n}.log_threshold' for n in neurons)
    x = torch.rand(2, 3, 24, 20)
    lif.train(), learnt.train()
    assert torch.allclose(learnt(x), lif(x), atol=1e-6)
    learnt(x).abs().mean().backward()
    grads = [m.log_threshold.grad for m in learnt.modules() if isinstance(m, StatelessLearntThresholdLIFNode)]
    assert all(g is not None for g in grads) and any(float(g.abs()) > 0 for g in grads)


def test_the_inference_copy_of_a_learnt_threshold_answers_as_the_arch():
    torch.manual_seed(1)
    net = SpikerIR(preset='tiny', T=4, neuron='lif_vth').eval()
    with torch.no_grad():
        for i, m in enumerate(m for m in net.modules() if isinstance(m, StatelessLearntThresholdLIFNode)):
            m.log_threshold.fill_(0.3 * ((i % 3) - 1))  # thresholds above, at and below the LIF's
        x = torch.rand(1, 3, 20, 24)
        assert torch.allclose(build_inference_network(net)(x), net(x), atol=1e-5)
