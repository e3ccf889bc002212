"""Fused multi-step LIF/IF loops for the CPU, bitwise equal to spikingjelly 2.0's reference loop.

On the CPU spikingjelly runs a neuron layer as a per-time-step Python loop of a dozen element-wise ops (charge,
surrogate spike function, reset), appends every step's spikes and membrane potentials to lists and stacks them,
even under ``torch.no_grad``. These loops do the same arithmetic in three passes per step, writing the spikes into
one preallocated [T, ...] output:

    h = charge(v, x[t])       one op for the plugin's LIF (tau 2, no input decay, reset to 0) and IF
    out[t] = h >= v_th        straight into the output
    v = reset(h, out[t])      one in-place op for a hard reset to 0

Why the results are the same bits as spikingjelly's loop:
- charge: spikingjelly computes v - (v - 0) / 2 + x. For a normal float v, v / 2 and v - v / 2 are exact (the
  latter by Sterbenz's lemma), so h = round(x + v / 2), which is exactly what ``torch.add(x, v, alpha=0.5)`` gives
  (with or without a fused multiply-add). Other settings run spikingjelly's formula op by op.
- spike: spikingjelly fires when h - v_th >= 0; a floating-point difference is zero only for equal operands and has
  their order's sign, so that is h >= v_th (NaN fires in neither).
- reset to 0: spikingjelly computes s * 0 + (1 - s) * h; ``h + (-1) * s * h`` gives the same value for s in {0, 1}
  (0 for s = 1, h for s = 0; NaN for an infinite h in both).
- gradients: autograd through spikingjelly's loop accumulates at most two non-zero terms per tensor, and a sum of
  two terms does not depend on their order, so the backward below repeats its products and sums op by op
  (surrogate ``(1 - sigmoid(a z)) * sigmoid(a z) * a`` with z = h - v_th, reset path ``-(g_v * h)``, leak
  ``g_h - g_h / tau``); results may differ from spikingjelly's only in the sign of a zero. The one transcendental
  op, the surrogate's sigmoid, runs per time step on membrane tensors laid out as spikingjelly's (its vectorised
  body and scalar tail can differ in the last bit, so the layout decides which elements get which).
- layout: the spikes come out contiguous, as spikingjelly's stacked output, whatever the input's strides.
The equalities are checked against spikingjelly's neuron in tests/inference/test_inference.py.

``neuron_spec(node)`` says whether a neuron can use these loops; ``multi_step_spikes`` is the no-grad inference
loop (also compiled with torch.compile on request); ``fused_multi_step`` adds the exact surrogate-gradient backward
for training. On CUDA spikingjelly's own fused kernels are used instead (see ``neurons.py``).
"""
from typing import NamedTuple, Optional

import torch

_FLOATS = (torch.float32, torch.float64)


class NeuronSpec(NamedTuple):
    """Arithmetic of a multi-step LIF (tau set) or IF (tau None) layer; v_reset None = soft reset."""
    tau: Optional[float]
    decay_input: bool
    v_threshold: float
    v_reset: Optional[float]
    alpha: Optional[float]  # Sigmoid surrogate sharpness (backward only); None = another surrogate
    detach_reset: bool

    @property
    def rest(self):
        return 0.0 if self.v_reset is None else self.v_reset

    @property
    def trainable(self):
        """Whether ``fused_multi_step`` reproduces spikingjelly's gradients for this neuron."""
        return self.alpha is not None and self.v_reset == 0.0


def neuron_spec(node):
    """The NeuronSpec of a spikingjelly LIFNode/IFNode (or subclass that keeps their arithmetic), else None."""
    from spikingjelly.activation_based import neuron, surrogate
    if isinstance(node, neuron.LIFNode):
        base, tau, decay = neuron.LIFNode, float(node.tau), bool(node.decay_input)
    elif isinstance(node, neuron.IFNode):
        base, tau, decay = neuron.IFNode, None, False
    else:
        return None
    cls = type(node)
    for name in ('single_step_functional_forward', 'multi_step_functional_forward', 'neuronal_charge'):
        if getattr(cls, name, None) is not getattr(base, name, None):
            return None  # a subclass with its own dynamics
    v_th, v_reset = node.v_threshold, node.v_reset
    if not isinstance(v_th, (int, float)) or not (v_reset is None or isinstance(v_reset, (int, float))):
        return None  # learnable / tensor thresholds
    fn = node.surrogate_function
    alpha = (float(fn.alpha) if type(fn) is surrogate.Sigmoid and getattr(fn, 'spiking', True)
             and isinstance(fn.alpha, (int, float)) else None)
    return NeuronSpec(tau, decay, float(v_th), None if v_reset is None else float(v_reset), alpha,
                      bool(node.detach_reset))


# ------------------------------------------------------------------------------------------------- one time step
def _fast_lif(spec):
    return spec.tau == 2.0 and not spec.decay_input and spec.v_reset == 0.0


def _first_charge_is_input(spec):
    """From rest at 0, without input decay, the first charge is the input itself (0 - 0 / tau + x, 0 + x)."""
    return spec.rest == 0.0 and not spec.decay_input


# The one Python copy of the update: the eager loops write into preallocated tensors (out=), the compiled loop
# passes out=None and gets new tensors, which torch.compile fuses.
def _charge(v, x, spec, out=None):
    """h = charge(v, x), written into ``out`` when given (``out`` may be ``v``)."""
    if spec.tau is None:  # IF: v + x
        return torch.add(v, x, out=out)
    if _fast_lif(spec):  # round(x + v / 2), see the module docstring
        return torch.add(x, v, alpha=0.5, out=out)
    below_rest = v - spec.rest if spec.rest else v  # v - 0.0 is v, bit for bit
    if spec.decay_input:  # v + (x - (v - r)) / tau
        return torch.add(v, (x - below_rest) / spec.tau, out=out)
    return torch.add(v - below_rest / spec.tau, x, out=out)  # v - (v - r) / tau + x


def _reset(h, spikes, spec, out=None):
    """v after the spikes of this step, written into ``out`` when given (``out`` may be ``h``)."""
    if spec.v_reset is None:  # soft: h - s * v_th
        return torch.add(h, spikes, alpha=-spec.v_threshold, out=out)
    if spec.v_reset == 0.0:  # s * 0 + (1 - s) * h
        return torch.addcmul(h, spikes, h, value=-1, out=out)
    return torch.add(spikes * spec.v_reset, (1.0 - spikes) * h, out=out)


# ----------------------------------------------------------------------------------------------------- inference
@torch.no_grad()
def multi_step_spikes(x, spec, out=None):
    """Spikes [T, ...] of a neuron layer that starts at rest, for inputs x [T, ...] of any strides. The spikes are
    written into ``out`` (x's shape and dtype, any strides; it may be x itself: step t reads x[t] before writing
    out[t]), by default a new contiguous tensor, as spikingjelly's stacked output."""
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device) if out is None else out
    v = None
    for t in range(x.shape[0]):
        if v is None and _first_charge_is_input(spec):
            v = x[0].clone()  # charge(0, x) = x (a -0 input becomes +0 there, which fires the same)
        else:
            v = torch.full_like(x[0], spec.rest) if v is None else v
            _charge(v, x[t], spec, out=v)
        torch.ge(v, spec.v_threshold, out=out[t])
        if t + 1 < x.shape[0]:
            _reset(v, out[t], spec, out=v)
    return out


def _functional_spikes(x, spec):
    """The same loop without out= arguments, written the way torch.compile fuses best (one kernel for all T)."""
    v = torch.full_like(x[0], spec.rest)
    steps = []
    for t in range(x.shape[0]):
        h = _charge(v, x[t], spec)
        s = (h >= spec.v_threshold).to(x.dtype)
        steps.append(s)
        v = _reset(h, s, spec)
    return torch.stack(steps)


_compiled = {}  # (function, device type) -> its torch.compile'd version


def compiled_for(fn, device_type):
    """``fn`` through torch.compile with shape-generic kernels, one compiled version per device type (the
    inference copies' neuron loops and attention tails share this cache)."""
    compiled = _compiled.get((fn, device_type))
    if compiled is None:
        compiled = _compiled[(fn, device_type)] = torch.compile(fn, dynamic=True)
    return compiled


def compiled_multi_step_spikes(x, spec, out=None):
    """``multi_step_spikes`` through torch.compile (one fused kernel per layer shape; the first call per T and
    device compiles). Exact for the plugin's neurons (tau 2 makes the division by tau a multiplication by 0.5)."""
    with torch.no_grad():
        spikes = compiled_for(_functional_spikes, x.device.type)(x, spec)
        if out is None:
            return spikes
        out.copy_(spikes)
        return out


# ------------------------------------------------------------------------------------------------------ training
def _surrogate_sigmoid_grad(h, spec):
    """spikingjelly's Sigmoid surrogate derivative at z = h - v_th: (1 - sigmoid(a z)) * sigmoid(a z) * a."""
    s = torch.sub(h, spec.v_threshold).mul_(spec.alpha).sigmoid_()
    return torch.rsub(s, 1).mul_(s).mul_(spec.alpha)


class _FusedNeuron(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, spec):
        spikes = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # contiguous, as spikingjelly's stack
        # one membrane tensor per step laid out as x[t], as spikingjelly's: the surrogate's sigmoid in backward
        # gives the same bits only on the same layout (vectorised body and scalar tail can differ in the last bit)
        charged = []
        v = torch.full_like(x[0], spec.rest)
        for t in range(x.shape[0]):
            h = _charge(v, x[t], spec, out=torch.empty_like(x[t]))
            charged.append(h)
            torch.ge(h, spec.v_threshold, out=spikes[t])
            if t + 1 < x.shape[0]:
                v = _reset(h, spikes[t], spec, out=v)
        ctx.save_for_backward(*charged)
        ctx.spec = spec
        return spikes

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_spikes):
        h, spec = ctx.saved_tensors, ctx.spec
        grad_x = torch.empty(grad_spikes.shape, dtype=h[0].dtype, device=h[0].device)
        grad_v = None  # gradient reaching v after step t from step t + 1 (none after the last step)
        for t in reversed(range(len(h))):
            grad_spike = grad_spikes[t]
            if grad_v is not None and not spec.detach_reset:  # reset path: d(s*0 + (1-s)*h)/ds = -h
                grad_spike = grad_spike - grad_v * h[t]
            grad_h = torch.mul(grad_spike, _surrogate_sigmoid_grad(h[t], spec), out=grad_x[t])
            if grad_v is not None:  # d(s*0 + (1-s)*h)/dh = 1 - s
                grad_h.add_(grad_v.masked_fill_(h[t] >= spec.v_threshold, 0.0))
            if spec.tau is None:  # IF: h = v + x
                grad_v = grad_h.clone()
            else:  # LIF: dh/dv = 1 - 1/tau; dh/dx = 1 (or 1/tau with input decay)
                grad_v = grad_h - grad_h / spec.tau
                if spec.decay_input:
                    grad_h.div_(spec.tau)
        return grad_x, None


def fused_multi_step(x, spec):
    """Spikes of a neuron layer that starts at rest, differentiable with spikingjelly's surrogate gradients
    (``spec.trainable`` must hold). Without grad it is ``multi_step_spikes``."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return multi_step_spikes(x, spec)
    return _FusedNeuron.apply(x, spec)


def fused_cpu_eligible(spec, x):
    """Whether the CPU loops above reproduce spikingjelly for this call (else spikingjelly's own path runs)."""
    if spec is None or x.device.type != 'cpu' or x.dtype not in _FLOATS or x.dim() < 2 or x.shape[0] == 0:
        return False
    if torch.compiler.is_compiling():  # spikingjelly's op traces into one graph; keep the compiled path as it was
        return False
    return spec.trainable or not (torch.is_grad_enabled() and x.requires_grad)
