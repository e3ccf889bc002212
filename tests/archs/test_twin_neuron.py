"""The quantised analog twin (neuron='rate<N>'): its output is the rate spikingjelly's LIF neuron reaches in N steps
of a constant input, its gradient is the smooth twin's, and it builds the spiking student's layers."""
import pytest
import torch
from spikingjelly.activation_based import neuron as sj_neuron

from spikerir_plugin.archs.neurons import QuantizedRateActivation, RateActivation
from spikerir_plugin.archs.spikerir_arch import SpikerIR

V_TH = 0.15


@pytest.mark.parametrize('steps', [1, 2, 4, 8])
def test_quantized_rate_is_the_lif_rate_under_constant_input(steps):
    x = torch.linspace(-0.1, 0.4, 2001)
    lif = sj_neuron.LIFNode(tau=2.0, decay_input=False, v_threshold=V_TH, v_reset=0.0, step_mode='m')
    expected = lif(x.expand(steps, -1).contiguous()).mean(0)
    got = QuantizedRateActivation(V_TH, steps)(x)
    assert torch.equal(got, expected)
    assert len(torch.unique(got)) > 1  # the grid crosses the staircase


def test_quantized_rate_gradient_is_the_smooth_twins():
    x = torch.linspace(-0.1, 0.4, 501)
    xq, xs = x.clone().requires_grad_(), x.clone().requires_grad_()
    weights = torch.rand_like(x)
    (QuantizedRateActivation(V_TH, 4)(xq) * weights).sum().backward()
    (RateActivation(V_TH)(xs) * weights).sum().backward()
    inside = (x > V_TH / 2) & (x < V_TH)
    assert torch.allclose(xq.grad[inside], xs.grad[inside]) and inside.any()
    assert torch.all(xq.grad[~inside] == 0)


def test_quantized_twin_has_the_students_parameters_and_no_state():
    twin, student = SpikerIR(neuron='rate4', T=1, reduction_t=1), SpikerIR(T=1, reduction_t=1)
    assert {k: v.shape for k, v in twin.state_dict().items()} == {k: v.shape for k, v in student.state_dict().items()}
    twin.eval()
    x = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        first, again = twin(x), twin(x)
    assert first.shape == x.shape and torch.equal(first, again)
    assert sum(isinstance(m, QuantizedRateActivation) for m in twin.modules()) > 0


@pytest.mark.parametrize('bad', ['rate0', 'rate-1', 'ratex', 'rate 4'])
def test_bad_twin_neuron_names_the_valid_values(bad):
    with pytest.raises(ValueError, match=r"neuron='.*' is not supported; valid values: .*rate<N>"):
        SpikerIR(neuron=bad)
