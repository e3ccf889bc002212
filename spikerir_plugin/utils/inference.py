"""The one entry point for running a trained network for inference (validation, spikerir-test, restore, energy).

``inference_network(net)`` returns a module to call under ``torch.no_grad()`` that gives the outputs of ``net`` in
eval mode:
- the plugin's spiking archs (SpikerIR, ESDNet, SPIDEN; anything with ``for_inference()``): their frozen inference
  copy (archs/fast_inference.py): fused neuron loops, no autograd, no surrogate functions, attention in place;
  outputs equal ``net`` in eval mode bit for bit. ``net`` itself is not modified and keeps its train/eval mode.
  The copy is a snapshot of the weights: it is cached and reused while ``net``'s parameters and buffers are
  unchanged, and rebuilt by the next call after any change (optimizer step, EMA update, ``load_state_dict``,
  training forward, device move). Training ``net`` never updates a copy the caller kept: call this again.
- any other network: ``net.eval()`` (``net`` switched to eval mode, as before).
DataParallel / DistributedDataParallel wrappers are looked through.

Options (spiking archs only): ``exact=False`` folds tdBN/BN into channels-last convolutions and, on the CPU, runs
the convolutions that read spikes as spike-driven table look-ups (archs/spike_conv.py; a C kernel built on first
use with the system C compiler, dense convolutions without one); faster, but spikes within rounding of the
threshold may flip, so outputs are not bit-equal (see archs/fast_inference.py). ``compile=True`` compiles the
neuron loops and the attention's element-wise passes with torch.compile (the exact copy's outputs unchanged; needs
a C++ compiler on the CPU; the first call compiles). On the CPU the page faults of fresh activation memory can take
a third of a forward: ``spikerir_plugin.utils.cpu_memory.keep_freed_memory()`` (process-wide; the plugin's restore
and energy commands call it) removes them.
"""
from torch import nn


def inference_network(net, exact=True, compile=False):
    """``net`` ready for inference, to call under torch.no_grad() (see the module docstring)."""
    if isinstance(net, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        net = net.module
    if hasattr(net, 'for_inference'):
        return net.for_inference(exact=exact, compile=compile)
    if not exact or compile:
        raise ValueError(f'{type(net).__name__} has no inference copy; exact=False and compile=True apply to the '
                         'spiking archs (SpikerIR, ESDNet, SPIDEN) only')
    return net.eval()
