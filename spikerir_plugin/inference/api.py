"""The one way to run a trained network for inference (validation, spikerir-test, restore, energy).

``inference_network(net)`` returns a module to call under ``torch.no_grad()`` that gives the outputs of ``net`` in
eval mode:
- the plugin's spiking archs (SpikerIR, ESDNet, SPIDEN: the archs whose class sets ``has_inference_copy``): their
  frozen inference copy (convert.py): fused neuron loops, no autograd, no surrogate functions, attention in place;
  outputs equal ``net`` in eval mode bit for bit. ``net`` itself is not modified and keeps its train/eval mode.
  The copy is a snapshot of the weights and batch-norm statistics, on their device and dtype: it is cached and
  returned again while every parameter and buffer of ``net`` keeps its storage and in-place version, and rebuilt by
  the next call after any change (optimizer step, EMA update, ``load_state_dict``, training forward, device move).
  A copy the caller kept is never updated: call this again after training. In-place edits of hyper-parameters
  (thresholds, swapped submodules) are not tracked: ``build_inference_network`` gives a fresh copy.
- any other network: ``net.eval()`` (``net`` switched to eval mode, as before).
DataParallel / DistributedDataParallel wrappers are looked through.

Options (spiking archs only): ``exact=False`` folds tdBN/BN into channels-last convolutions and, on the CPU, runs
the convolutions that read spikes as spike-driven table look-ups (ops/spike_conv; a C kernel built on first use
with the system C compiler, dense convolutions without one); faster, but spikes within rounding of the threshold
may flip, so outputs are not bit-equal (see convert.py). ``compile=True`` compiles the neuron loops and the
attention's element-wise passes with torch.compile (the exact copy's outputs unchanged; needs a C++ compiler on the
CPU; the first call compiles). On the CPU the page faults of fresh activation memory can take a third of a
forward: ``keep_freed_memory()`` (cpu_memory.py; process-wide; the plugin's restore and energy commands call it)
removes them.
"""
import weakref

from torch import nn

from .convert import build_inference_network

_CACHE = weakref.WeakKeyDictionary()  # arch -> (fingerprint and options, inference copy)


def _fingerprint(net):
    """Storage and in-place version of every parameter and buffer: changes with optimizer steps, load_state_dict,
    EMA updates, running-statistics updates and device/dtype moves."""
    return tuple((t.data_ptr(), t._version, t.dtype, t.device, tuple(t.shape))
                 for t in (*net.parameters(), *net.buffers()))


def inference_network(net, exact=True, compile=False):
    """``net`` ready for inference, to call under torch.no_grad() (see the module docstring)."""
    if isinstance(net, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        net = net.module
    if getattr(net, 'is_inference_copy', False):
        return net
    if not getattr(type(net), 'has_inference_copy', False):
        if not exact or compile:
            raise ValueError(f'{type(net).__name__} has no inference copy; exact=False and compile=True apply to '
                             'the spiking archs (SpikerIR, ESDNet, SPIDEN) only')
        return net.eval()
    key = (_fingerprint(net), bool(exact), bool(compile))
    cached = _CACHE.get(net)
    if cached is not None and cached[0] == key:
        return cached[1]
    copy = build_inference_network(net, exact=exact, compile=compile)
    _CACHE[net] = (key, copy)
    return copy
