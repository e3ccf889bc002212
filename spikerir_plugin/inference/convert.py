"""Inference copies of the spiking archs (SpikerIR, ESDNet, SPIDEN): ``build_inference_network(net)``; callers use
``inference_network`` (api.py), which caches the copy.

The copy is the same arch (same class, same forward code, same module names) with its layers swapped for inference
layers and its weights frozen (``requires_grad=False``):
- LIF/IF neurons -> ``InferenceNeuron``: the fused no-grad loop of ``ops/neuron_loops.py`` on the CPU (no autograd,
  no surrogate function, spikes written into one preallocated output; optionally compiled with torch.compile),
  spikingjelly's fused kernels on CUDA; other neurons (PLIF's learnt time constant, a learnt threshold) stay the
  arch's own, frozen;
- multi-step convs and batch norms (tdBN, BN) -> plain 4-D calls on [T*B, C, H, W] without spikingjelly's wrappers;
- each spiking residual block -> ``InferenceResidualBlock``: the same convs and norms, then the attention
  (``InferenceAttention``) and the block's residual applied in the block output's own storage: one plane
  mean/max pass for the temporal and channel gates, max reductions without indices, gates, ReLU and residual
  in place, no copies of the feature map;
- where a layer's input is a fresh tensor that nothing else reads (a batch norm after its convolution, a neuron
  after its batch norm, inside one Sequential) the layer writes its output over its input: fewer large
  allocations, each of which costs page faults on the CPU;
- the image convolution's output is seen T times through a stride-0 view instead of being copied T times.

Numerics. By default (``exact=True``) every convolution, batch norm, reduction and transcendental op is the same
ATen call on the same shapes and strides as in the arch's eval forward, and every other step is exact
(ops/neuron_loops.py explains why), so outputs equal the arch in eval bit for bit on the same machine and thread count
(checked on real photos in tests/inference/test_inference.py), and so are the spikes, firing rates and op counts
(``spikerir-energy`` measures this copy).

``exact=False`` trades that for speed: every tdBN/BN is folded into the preceding convolution's weights and bias
(one pass less per layer), the convolutions run channels-last (NHWC: oneDNN's faster path for these small channel
counts, no layout conversions), and on the CPU the convolutions that read spikes are spike-driven
(``ops/spike_conv``): inside a Sequential, a LIF/IF neuron whose next layer is such a convolution writes its spikes
as bits, and the convolution adds table rows of summed weights instead of multiplying (``build_inference_network(
..., spike_tables=False)`` keeps oneDNN's dense convolutions). These convolutions round differently from the
arch's; a membrane potential that lands within rounding of the threshold can then fire in one and not in the
other, and the flipped spike changes the output locally. Measured figures are in benchmarks/README.md
("Inference"): the output is the same to ~1e-6 except at the pixels near a flipped spike, where it differs by up
to a few 1e-2.

Multi-level spikes (``neurons.MultiLevelSpikeNode``, VLIF's k/4 spikes) have no fast path: in both copies those
neurons run as in the arch (under no_grad) and the layers reading their float spikes stay dense convolutions
(spike tables pack binary spikes only), so exact=False speeds up only the rest of such a net (its LIF neurons,
folded batch norms, channels-last convolutions); exact=True equals eval mode bit for bit as for the other archs.

``compile=True`` (with either setting of ``exact``) runs the neuron loops and each attention's gate/ReLU/residual
tail through torch.compile: one fused kernel per neuron layer for all T steps, one pass instead of three for the
tail. The compiled kernels do the same IEEE operations in the same order, so the exact copy's outputs are the same
bits as without compile (checked in tests/inference/test_inference.py); LIF neurons with a tau other than 2 keep the
eager loop. With ``exact=False`` the attention's spatial statistics are compiled too (``InferenceAttention``): a
compiled reduction may sum in another order, so that copy may differ from the eager fast copy in the last bits.
The first call compiles (kernels generic in the image size); on the CPU it needs a C++ compiler.
"""

import copy

from spikingjelly.activation_based import layer
from spikingjelly.activation_based.neuron import BaseNode
from torch import nn

from spikerir_plugin.archs.spiking_blocks import FastMultiDimensionalAttention, SpikingResidualBlock
from spikerir_plugin.ops import spike_conv
from spikerir_plugin.ops.neuron_loops import neuron_spec
from .layers import InferenceAttention, InferenceBatchNorm, InferenceConv2d, InferenceNeuron, InferenceResidualBlock


def _is_norm(m):
    return isinstance(m, nn.modules.batchnorm._BatchNorm)


def _is_plain_conv(m):
    return type(m) in (layer.Conv2d, nn.Conv2d) and m.padding_mode == 'zeros'


def _foldable(conv, norm):
    return _is_plain_conv(conv) and _is_norm(norm) and norm.track_running_stats and norm.running_mean is not None


class _Converter:
    """Maps a module of a (deep-copied) arch to its inference counterpart; containers are converted in place."""

    def __init__(self, exact, compiled, spike_tables=False):
        self.exact, self.compiled, self.spike_tables = exact, compiled, spike_tables

    def __call__(self, module):
        if isinstance(module, BaseNode):
            plain = neuron_spec(module) and not getattr(module, 'learns_threshold', False)
            return InferenceNeuron(module, self.compiled, self.exact) if plain else module
        if isinstance(module, SpikingResidualBlock):
            return InferenceResidualBlock(module, self)
        # an attention whose block adds the residual after a plain attn(y) call (fuses_residual=False: VLIF) is
        # left a plain module below, its convs converted
        if isinstance(module, FastMultiDimensionalAttention) and getattr(module, 'fuses_residual', True):
            return InferenceAttention(module, self.compiled, self.exact)
        if _is_plain_conv(module):
            return InferenceConv2d.from_conv(module, channels_last=not self.exact)
        if type(module) in (nn.BatchNorm2d, layer.BatchNorm2d, layer.ThresholdDependentBatchNorm2d) and \
                module.track_running_stats and module.running_mean is not None:
            return InferenceBatchNorm(module)
        if isinstance(module, nn.Sequential):
            return self._sequential(module)
        # any other module (U-Net stages, up/down sampling, heads): same forward, children converted
        for name, child in list(module._modules.items()):
            if child is not None:
                module._modules[name] = self(child)
        return module

    def _sequential(self, seq):
        """Children converted; with exact=False each (conv, batch norm) pair becomes (folded conv, Identity)."""
        names = list(seq._modules)
        i = 0
        while i < len(names):
            child = seq._modules[names[i]]
            norm = seq._modules[names[i + 1]] if i + 1 < len(names) else None
            if not self.exact and _foldable(child, norm):
                seq._modules[names[i]] = InferenceConv2d.from_conv(child, norm, channels_last=True)
                seq._modules[names[i + 1]] = nn.Identity()
                i += 2
            else:
                seq._modules[names[i]] = self(child)
                i += 1
        _mark_inplace(seq)
        if self.spike_tables:
            _attach_spike_tables(seq)
        return seq


def _mark_inplace(seq):
    """Inside a Sequential a layer's output goes to the next layer alone: a batch norm right after a convolution
    and a neuron right after a batch norm or convolution (Identity placeholders skipped) may overwrite their input.
    The first layer never does (its input may be read elsewhere, e.g. by the block's residual)."""
    previous = None
    for module in seq:
        if isinstance(module, nn.Identity):
            continue
        if isinstance(module, InferenceBatchNorm) and isinstance(previous, InferenceConv2d):
            module.inplace = True
        if isinstance(module, InferenceNeuron) and isinstance(previous, (InferenceConv2d, InferenceBatchNorm)):
            module.inplace = True
        previous = module


def _attach_spike_tables(seq):
    """Inside a Sequential a neuron's spikes go to the next layer alone: where that is a convolution that can run
    on packed spikes (spike_conv.table_eligible), the neuron writes bits and the convolution reads them."""
    layers = [m for m in seq if not isinstance(m, nn.Identity)]
    for neuron, conv in zip(layers, layers[1:]):
        if isinstance(neuron, InferenceNeuron) and isinstance(conv, InferenceConv2d) and \
                spike_conv.packable(neuron.spec) and spike_conv.table_eligible(conv):
            conv.attach_spike_table()
            neuron.pack = True


_HOOK_DICTS = ('_forward_hooks', '_forward_pre_hooks', '_backward_hooks', '_backward_pre_hooks',
               '_forward_hooks_with_kwargs', '_forward_pre_hooks_with_kwargs', '_forward_hooks_always_called')


def build_inference_network(net, exact=True, compile=False, spike_tables=True):
    """A frozen inference copy of a spiking arch (see the module docstring); ``net`` itself is left untouched.
    The copy carries no hooks of ``net``. ``spike_tables=False`` keeps dense convolutions with exact=False."""
    use_tables = (spike_tables and not exact and _on_cpu(net) and spike_conv.kernels() is not None)
    fast = _Converter(exact, compile, use_tables)(copy.deepcopy(net))
    for module in fast.modules():
        for name in _HOOK_DICTS:
            hooks = getattr(module, name, None)
            if hooks:
                hooks.clear()
    for p in fast.parameters():
        p.requires_grad_(False)
    if hasattr(fast, 'expand_embedding'):  # a SpikingUNet: the blocks only read the embedding, so no T copies
        fast.expand_embedding = True
    fast.eval()
    fast.is_inference_copy = True  # inference_network() on the copy returns the copy itself
    return fast


def _on_cpu(net):
    return all(p.device.type == 'cpu' for p in net.parameters())
