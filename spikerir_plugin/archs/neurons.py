"""Spiking neurons whose every multi-step call is a pure function of its input: the one place neuron state is reset.

spikingjelly keeps a neuron's membrane potential in ``_memories`` between calls, so a network built from its
neurons answers the same input differently depending on what it saw before, and a second ``loss.backward()`` in a
plain training loop fails ("Trying to backward through the graph a second time") unless every caller remembers
``functional.reset_net``. A restoration network sees each image as one whole sequence of T time steps, so nothing
needs to survive a call: these subclasses start each multi-step call from the resting potential and drop the
final potential when it returns. Outputs, gradients and the fused (Triton/CUDA) kernels are spikingjelly's own;
only the state handling differs. This is also what makes recomputation (activation checkpointing) of a block
exact: a recomputed neuron starts from the same resting state as the original call.

On the CPU a multi-step call runs the fused loops of ``ops/neuron_loops.py`` instead of spikingjelly's per-step
reference loop: same spikes and the same surrogate gradients bit for bit (tested against spikingjelly's neuron),
three element-wise passes per time step instead of about fifteen, spikes written into one preallocated output.
On CUDA spikingjelly's fused kernels (Triton / CUDA) run as before, and so does anything those loops do not cover
(another surrogate function, ``store_v_seq``, learnable thresholds, torch.compile tracing).

Single-step mode (``step_mode='s'``) is left as spikingjelly defines it: there the caller drives time and the state
must persist between calls.
"""
import contextlib
import contextvars

import torch
from spikingjelly.activation_based import neuron
from torch import nn

from spikerir_plugin.ops.neuron_loops import fused_cpu_eligible, fused_multi_step, multi_step_spikes, neuron_spec


# a context variable, not a module flag: a block in one thread (or task) does not switch the neurons of another
_FUSED_CPU_LOOPS = contextvars.ContextVar('spikerir_fused_cpu_loops', default=True)


@contextlib.contextmanager
def spikingjelly_loops():
    """Inside this block the neurons run spikingjelly's own multi-step code on the CPU too: the reference the fused
    loops are tested and benchmarked against."""
    token = _FUSED_CPU_LOOPS.set(False)
    try:
        yield
    finally:
        _FUSED_CPU_LOOPS.reset(token)


def fused_cpu_loops_active():
    """Whether multi-step neuron calls on the CPU run the fused loops (False inside ``spikingjelly_loops()``)."""
    return _FUSED_CPU_LOOPS.get()


def _rest(node):
    # the registered reset values of LIF/IF are Python floats (v_reset, or 0.0 for a soft reset): assigning them is
    # what spikingjelly's reset() does, without its deepcopy, so it also traces under torch.compile
    for key, value in node._memories_rv.items():
        node._memories[key] = value


def multi_step_from_rest(node, spikingjelly_forward, x_seq, *args, **kwargs):
    """``node``'s multi-step forward from the resting potential, without leaving state behind: the fused CPU loops
    where they apply, else ``spikingjelly_forward`` (the spikingjelly class's own ``multi_step_forward``)."""
    _rest(node)
    try:
        plain_call = not (args or kwargs or node.store_v_seq or node._neuron_precision is not None)
        if fused_cpu_loops_active() and plain_call:
            spec = neuron_spec(node)
            if fused_cpu_eligible(spec, x_seq):
                return fused_multi_step(x_seq, spec)
        return spikingjelly_forward(x_seq, *args, **kwargs)
    finally:
        _rest(node)


class StatelessLIFNode(neuron.LIFNode):
    """spikingjelly's LIFNode; each multi-step call starts at rest (see the module docstring)."""

    def multi_step_forward(self, x_seq, *args, **kwargs):
        return multi_step_from_rest(self, super().multi_step_forward, x_seq, *args, **kwargs)


class StatelessIFNode(neuron.IFNode):
    """spikingjelly's IFNode; each multi-step call starts at rest (see the module docstring)."""

    def multi_step_forward(self, x_seq, *args, **kwargs):
        return multi_step_from_rest(self, super().multi_step_forward, x_seq, *args, **kwargs)


class StatelessParametricLIFNode(neuron.ParametricLIFNode):
    """spikingjelly's ParametricLIFNode (PLIF: the time constant learnt per layer, 1 / sigmoid(w), Fang et al.,
    ICCV 2021); each multi-step call starts at rest (see the module docstring). Its learnt tau is not in the fused
    CPU loops' arithmetic, so it runs spikingjelly's own multi-step code."""

    def multi_step_forward(self, x_seq, *args, **kwargs):
        return multi_step_from_rest(self, super().multi_step_forward, x_seq, *args, **kwargs)


class StatelessLearntThresholdLIFNode(StatelessLIFNode):
    """The blocks' LIF with a firing threshold learnt per layer (``neuron='lif_vth'``): theta = v_threshold *
    exp(log_threshold), log_threshold starting at 0 (the shipped LIF). spikingjelly's multi-step LIF takes the
    threshold as a Python number (a tensor threshold gets no gradient), so the threshold is learnt through the input
    instead: with a hard reset to 0 and no input decay the potential is linear in the input, so a neuron driven by
    x fires against theta exactly when one driven by x * v_threshold / theta fires against v_threshold. The spikes
    are a true learnt threshold's; the surrogate's slope is scaled by v_threshold / theta (1 at the start). The
    fused CPU loops run as for the LIF."""

    learns_threshold = True  # inference.convert keeps it as it is (its threshold is not a number)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.log_threshold = nn.Parameter(torch.zeros(()))

    @property
    def threshold(self):
        """The learnt threshold theta (a 0-dim tensor)."""
        return self.v_threshold * self.log_threshold.exp()

    def multi_step_forward(self, x_seq, *args, **kwargs):
        return super().multi_step_forward(x_seq * torch.exp(-self.log_threshold), *args, **kwargs)

    def single_step_forward(self, x, *args, **kwargs):
        return super().single_step_forward(x * torch.exp(-self.log_threshold), *args, **kwargs)


def check_stateless(net):
    """Raise if a neuron of ``net`` kept a membrane potential after a forward (a network built from spikingjelly's
    stateful neurons): results would depend on what the network saw before."""
    from spikingjelly.activation_based.base import MemoryModule
    stateful = [name for name, m in net.named_modules() if isinstance(m, MemoryModule)
                and any(not isinstance(v, (float, int, type(None))) for v in m._memories.values())]
    if stateful:
        shown = ', '.join(stateful[:5]) + (f' ... ({len(stateful) - 5} more)' if len(stateful) > 5 else '')
        raise ValueError(f'{type(net).__name__} keeps neuron state between calls ({shown}): its output would depend '
                         'on earlier inputs. Build it from spikerir_plugin.archs.neurons.StatelessLIFNode / '
                         'StatelessParametricLIFNode / StatelessIFNode, or call '
                         'spikingjelly.activation_based.functional.reset_net(self) at the end of its forward.')


class RateActivation(nn.Module):
    """The analog twin of the blocks' LIF neuron (``neuron='rate'``): clamp((x - v_th / 2) / (v_th / 2), 0, 1).

    Under a constant input x, an LIF neuron of these blocks (tau 2, no input decay, hard reset) starting at rest
    fires never for x < v_th / 2, at every step for x >= v_th, and at a rate that climbs in steps between the two;
    this ramp is that rate, smoothed. A network built with it has the spiking network's layers and parameter names
    but no spikes: a same-architecture ANN that trains fast and can teach (or initialise) the spiking one. Works on
    any shape, so multi-step [T, B, C, H, W] tensors pass through unchanged in layout.
    """

    def __init__(self, v_threshold):
        super().__init__()
        self.v_threshold = float(v_threshold)

    def forward(self, x):
        half = self.v_threshold / 2
        return torch.clamp((x - half) / half, 0.0, 1.0)

    def extra_repr(self):
        return f'v_threshold={self.v_threshold}'


class _LIFStaircase(torch.autograd.Function):
    """Forward: the spike count / steps of the blocks' LIF neuron (``spec``) driven by x for ``steps`` steps from
    rest, by the same neuron loop as the spiking layers (ops/neuron_loops.py); backward: the gradient of
    RateActivation's ramp (straight through)."""

    @staticmethod
    def forward(ctx, x, spec, steps):
        ctx.save_for_backward(x)
        ctx.v_threshold = spec.v_threshold
        return multi_step_spikes(x.expand(steps, *x.shape), spec).mean(0)

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        half = ctx.v_threshold / 2
        inside = (x > half) & (x < ctx.v_threshold)
        return grad * inside / half, None, None


class QuantizedRateActivation(RateActivation):
    """``neuron='rate<N>'`` (e.g. 'rate4'): the analog twin whose output is the firing rate the LIF neuron actually
    reaches in N steps of its input held constant (a staircase of N + 1 levels, 0, 1/N, .., 1), trained through the
    smooth ramp's gradient. The twin then learns with the quantisation the spiking student will have at T = N,
    which is what ANN-to-SNN conversion work does with its clip-floor activations; the smooth ramp ('rate') hides
    it, and part of the twin's accuracy is lost when the student starts from it.
    """

    def __init__(self, v_threshold, steps):
        super().__init__(v_threshold)
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f'the quantised rate needs steps >= 1, got {steps!r}')
        self.steps = steps
        # the spiking layers' neuron (spiking_blocks.make_neuron) as a spec of the shared neuron loop
        self.spec = neuron_spec(StatelessLIFNode(tau=2.0, decay_input=False, v_threshold=v_threshold))

    def forward(self, x):
        return _LIFStaircase.apply(x, self.spec, self.steps)

    def extra_repr(self):
        return f'v_threshold={self.v_threshold}, steps={self.steps}'


class _QuantizeLevels(torch.autograd.Function):
    """round(clamp(v, 0, L)) / L; backward: the gradient / L where 0 <= v <= L, 0 elsewhere (straight through)."""

    @staticmethod
    def forward(ctx, v, levels):
        ctx.save_for_backward(v)
        ctx.levels = levels
        return torch.round(torch.clamp(v, 0, levels)) / levels

    @staticmethod
    def backward(ctx, grad):
        v, = ctx.saved_tensors
        inside = (v >= 0) & (v <= ctx.levels)
        return grad * inside / ctx.levels, None


class MultiLevelSpikeNode(nn.Module):
    """Multi-level ("integer") spiking neuron on multi-step input [T, ...]: each step emits k / levels, k in
    0..levels (VLIF's ``MultiSpike4`` with ``mem_update``, levels = 4, decay = 0.25).

    v_0 = x_0; v_t = (v_{t-1} - s_{t-1}) * decay + x_t (the reset subtracts the emitted value, not part of the
    gradient); s_t = round(clamp(v_t, 0, levels)) / levels, with a straight-through gradient scaled by 1 / levels
    inside [0, levels]. A plain module with no state between calls: every call starts at rest, like the stateless
    LIF/IF nodes above. ``levels`` tells the energy report how to count its spikes (k unit spikes; see
    tools/energy_report.py) and which level occupancy to show.
    """

    def __init__(self, levels=4, decay=0.25):
        super().__init__()
        if not isinstance(levels, int) or levels < 1:
            raise ValueError(f'levels must be a positive int, got {levels!r}')
        self.levels, self.decay = levels, float(decay)

    def extra_repr(self):
        return f'levels={self.levels}, decay={self.decay}'

    def forward(self, x_seq):
        out = torch.empty_like(x_seq)
        v = spike = None
        for t in range(x_seq.shape[0]):
            v = x_seq[t] if t == 0 else (v - spike.detach()) * self.decay + x_seq[t]
            spike = _QuantizeLevels.apply(v, self.levels)
            out[t] = spike
        return out
