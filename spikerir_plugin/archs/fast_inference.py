"""Inference copies of the spiking archs (SpikerIR, ESDNet, SPIDEN): ``arch.for_inference()``.

The copy is the same arch (same class, same forward code, same module names) with its layers swapped for inference
layers and its weights frozen (``requires_grad=False``):
- spiking neurons -> ``InferenceNeuron``: the fused no-grad loop of ``neuron_kernels.py`` on the CPU (no autograd,
  no surrogate function, spikes written into one preallocated output; optionally compiled with torch.compile),
  spikingjelly's fused kernels on CUDA;
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
(neuron_kernels.py explains why), so outputs equal the arch in eval bit for bit on the same machine and thread count
(checked on real photos in tests/test_inference.py), and so are the spikes, firing rates and op counts
(``spikerir-energy`` measures this copy).

``exact=False`` trades that for speed: every tdBN/BN is folded into the preceding convolution's weights and bias
(one pass less per layer), the convolutions run channels-last (NHWC: oneDNN's faster path for these small channel
counts, no layout conversions), and on the CPU the convolutions that read spikes are spike-driven
(``spike_conv.py``): inside a Sequential, a LIF/IF neuron whose next layer is such a convolution writes its spikes
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
bits as without compile (checked in tests/test_inference.py); LIF neurons with a tau other than 2 keep the eager
loop. With ``exact=False`` the attention's spatial statistics are compiled too (``InferenceAttention``): a
compiled reduction may sum in another order, so that copy may differ from the eager fast copy in the last bits.
The first call compiles (kernels generic in the image size); on the CPU it needs a C++ compiler.
"""
import copy
import types
import weakref

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, layer
from torch import nn

from spikerir_plugin.archs import spike_conv
from spikerir_plugin.archs.neuron_kernels import (compiled_for, compiled_multi_step_spikes, multi_step_spikes,
                                                    neuron_spec)


def _frozen(t):
    return None if t is None else nn.Parameter(t.detach(), requires_grad=False)


def _empty_like_dense(x):
    """An uninitialised tensor of x's shape laid out as x: x's own strides, or channels-last when x is a channel
    slice of a channels-last tensor (not dense, so empty_like would fall back to the default layout)."""
    if x.dim() == 5 and x.stride(2) == 1 and x.shape[2] > 1 and not x.is_contiguous():
        t, b, c, h, w = x.shape
        return torch.empty((t, b, h, w, c), dtype=x.dtype, device=x.device).permute(0, 1, 4, 2, 3)
    return torch.empty_like(x)


def _seq_apply(fn, x):
    """fn on [T*B, ...] for a multi-step input [T, B, ...] (as spikingjelly's seq_to_ann_forward); 4-D as is."""
    if x.dim() == 5:
        return fn(x.flatten(0, 1)).unflatten(0, x.shape[:2])
    return fn(x)


class InferenceNeuron(nn.Module):
    """No-grad multi-step LIF/IF layer starting at rest; ``forward(x, out=None)`` writes spikes into ``out``."""

    def __init__(self, node, compiled=False, exact=True):
        super().__init__()
        self.spec = neuron_spec(node)
        if self.spec is None:
            raise TypeError(f'{type(node).__name__} is not a LIF/IF neuron with spikingjelly 2.0 dynamics')
        self.surrogate_function = node.surrogate_function  # for spikingjelly's CUDA kernels
        # compiled only where the compiler's arithmetic is known to equal the loop's (a division by tau = 2 is an
        # exact scaling; other taus keep the eager loop)
        self.compiled = compiled and (self.spec.tau is None or self.spec.tau == 2.0)
        # exact: contiguous spikes like the arch's neurons (the next conv sees the same layout); else x's layout
        self.exact = exact
        self.inplace = False  # set by the conversion where the input is a fresh tensor nothing else reads
        self.pack = False  # set by the conversion where only spike-table convolutions read the spikes: the layer
        # then returns spike_conv.PackedSpikes (bits), which forward hooks on it see too (PackedSpikes.unpack())

    def extra_repr(self):
        return (f'{self.spec}, compiled={self.compiled}, exact={self.exact}, inplace={self.inplace}, '
                f'pack={self.pack}')

    def forward(self, x, out=None):
        if x.requires_grad and torch.is_grad_enabled():
            raise RuntimeError('an inference network has no gradients; call it under torch.no_grad() '
                               '(train the original network instead)')
        if x.dtype in (torch.bfloat16, torch.float16):  # fp32 neuron state under autocast, as speed.prepare_model
            x = x.float()
        if self.pack and out is None and x.device.type == 'cpu' and x.dtype == torch.float32 and x.dim() == 5:
            return spike_conv.pack_spikes(x, self.spec)  # the spikes as bits, for the next convolutions
        if x.device.type == 'cuda':  # spikingjelly's fused kernels, exactly what the arch's own neurons run there
            return self._cuda(x, out)
        if self.compiled:  # one fused kernel returns a fresh tensor; copied only into a caller's buffer
            return compiled_multi_step_spikes(x, self.spec, out=out)
        if out is None and self.inplace and (x.is_contiguous() or not self.exact):
            out = x  # step t reads x[t] before writing out[t]: the spikes may overwrite a dead input
        if out is None and not self.exact:
            out = _empty_like_dense(x)
        return multi_step_spikes(x, self.spec, out=out)

    @torch.no_grad()
    def _cuda(self, x, out):
        spec, v = self.spec, torch.full_like(x[0], self.spec.rest)
        if spec.tau is None:
            spikes = functional.if_multi_step(x, v, spec.v_threshold, spec.v_reset, self.surrogate_function,
                                              spec.detach_reset)[0]
        else:
            spikes = functional.lif_multi_step(x, v, spec.tau, spec.decay_input, spec.v_threshold, spec.v_reset,
                                               self.surrogate_function, spec.detach_reset)[0]
        return spikes if out is None else out.copy_(spikes)


class InferenceConv2d(nn.Conv2d):
    """A frozen 2-D convolution applied to [B, C, H, W] or, per time step, to [T, B, C, H, W]."""

    @classmethod
    def from_conv(cls, conv, norm=None, channels_last=False):
        """Copy of ``conv``; with ``norm`` (an eval-mode batch norm) folded into its weight and bias."""
        weight, bias = conv.weight.detach(), None if conv.bias is None else conv.bias.detach()
        if norm is not None:
            weight, bias = torch.nn.utils.fusion.fuse_conv_bn_weights(
                weight, bias, norm.running_mean, norm.running_var, norm.eps, norm.weight, norm.bias)
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                  conv.groups, bias=bias is not None, device=weight.device, dtype=weight.dtype)
        if channels_last:  # NHWC weights make the convolution run (and return) channels-last
            weight = weight.contiguous(memory_format=torch.channels_last)
        new.weight, new.bias = _frozen(weight), _frozen(bias)
        new.spike_table = None
        return new

    def attach_spike_table(self):
        """Let this convolution read PackedSpikes (spike_conv.py): the tables of its folded weights (CPU only)."""
        self.spike_table = spike_conv.SpikeTable(self.weight, self.bias)

    def forward(self, x):
        if isinstance(x, spike_conv.PackedSpikes):
            return spike_conv.table_conv(x, self.spike_table, self.stride[0], self.padding[0])
        return _seq_apply(super().forward, x)


class InferenceBatchNorm(nn.Module):
    """An eval-mode batch norm (BN or tdBN) with frozen statistics, on 4-D or multi-step 5-D inputs: the same
    ``F.batch_norm`` call as the original module in eval mode."""

    def __init__(self, norm):
        super().__init__()
        if not norm.track_running_stats or norm.running_mean is None:
            raise ValueError(f'{type(norm).__name__} without running statistics cannot be frozen for inference')
        self.weight, self.bias = _frozen(norm.weight), _frozen(norm.bias)
        self.register_buffer('running_mean', norm.running_mean.detach())
        self.register_buffer('running_var', norm.running_var.detach())
        self.eps = norm.eps
        self.inplace = False  # set by the conversion where the input is a fresh tensor nothing else reads

    def extra_repr(self):
        return f'inplace={self.inplace}'

    def forward(self, x):
        return _seq_apply(self._normalise, x)

    def _normalise(self, x):
        if not self.inplace or torch.is_autocast_enabled(x.device.type):  # autocast sees only the functional op
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        # the kernel F.batch_norm runs (element-wise in eval mode), writing over its input
        torch.ops.aten.native_batch_norm.out(x, self.weight, self.bias, self.running_mean, self.running_var, False,
                                             0.0, self.eps, out=x, save_mean=x.new_empty(0),
                                             save_invstd=x.new_empty(0))
        return x


class InferenceAttention(nn.Module):
    """``FastMultiDimensionalAttention`` followed by the block's residual, computed in the attention input's
    storage: ``forward(y, residual, addend)`` returns relu(attention(y + addend)) + residual, overwriting y.

    The same reductions (plane means over H, W; the spatial mean over T, C) run on the same tensor layout as in
    the training module, so the gates are the same bits; maxima need no indices here (``amax``), and the gates,
    ReLU and residual are applied in place instead of building a new feature map at each step.

    With ``compiled`` and not ``exact`` the spatial gate's statistics are taken from y times the temporal/channel
    gate in one compiled pass without writing that product, and both gates, ReLU and residual are applied in one
    more: after the shortcut sum and the plane statistics, two passes over the feature map instead of four. The
    compiled reduction sums in another order than ATen's, so the spatial gate may differ in the last bits: for
    exact=False only."""

    def __init__(self, attention, compiled=False, exact=True):
        super().__init__()
        self.T = attention.T
        self.ta, self.ca, self.sa = attention.ta, attention.ca, attention.sa
        self.compiled = compiled  # the gating tail as one torch.compile'd pass (see _gate_relu_residual_)
        self.fused = compiled and not exact  # the spatial statistics in a compiled pass too

    def extra_repr(self):
        return f'compiled={self.compiled}, fused={self.fused}'

    def forward(self, y, residual, addend=None):
        if addend is not None:  # the block's shortcut
            y.add_(addend)
        nhwc = y.stride(2) == 1 and not y.is_contiguous()  # exact=False runs channels-last
        gate = self._temporal_channel_gate(y, nhwc)
        tail = compiled_for(_gate_relu_residual_, y.device.type) if self.compiled else _gate_relu_residual_
        if self.sa is None:
            return tail(y, gate, residual)
        if self.fused:
            stats = compiled_for(_gated_pixel_stats, y.device.type)(y, gate)
            spatial = torch.sigmoid(self.sa.conv(stats))[None]
            return compiled_for(_gates_relu_residual_, y.device.type)(y, gate, spatial, residual)
        if gate is not None:  # the spatial statistics read y after the temporal/channel gates
            y.mul_(gate)
        stats = _nhwc_pixel_stats(y) if nhwc else torch.stack((y.mean((0, 2)), y.amax((0, 2))), dim=1)
        return tail(y, torch.sigmoid(self.sa.conv(stats))[None], residual)

    def _temporal_channel_gate(self, y, nhwc):
        """The product of the temporal and channel gates, [T, B, C, 1, 1], or None without either."""
        if self.ta is None and self.ca is None:
            return None
        # the training module's reductions on NCHW (same calls, same bits); see _nhwc_* for channels-last
        plane_mean, plane_max = _nhwc_plane_stats(y) if nhwc else (y.mean((3, 4)), y.amax((3, 4)))
        weight = None
        if self.ta is not None:
            gate_t = self.ta(plane_mean.mean(2).t(), plane_max.amax(2).t()).t()[:, :, None]
            plane_mean, plane_max, weight = plane_mean * gate_t, plane_max * gate_t, gate_t
        if self.ca is not None:
            gate_c = self.ca(plane_mean.mean(0), plane_max.amax(0))[None]
            weight = gate_c if weight is None else weight * gate_c
        return weight[..., None, None]


def _gated_pixel_stats(y, gate):
    """[B, 2, H, W]: mean and max over T and C of y * gate (None: of y), the product not written back."""
    gated = y if gate is None else y * gate
    return torch.stack((gated.mean((0, 2)), gated.amax((0, 2))), dim=1)


def _gates_relu_residual_(y, gate, spatial, residual):
    """relu(y * gate * spatial) + residual written over y, the products in that order (gate None: no product): the
    unfused path's y.mul_(gate) and tail as one function, which torch.compile turns into one pass."""
    if gate is not None:
        y.mul_(gate)
    return _gate_relu_residual_(y, spatial, residual)


def _gate_relu_residual_(y, gate, residual):
    """relu(y * gate) + residual written over y (gate None: no product), in the training module's order. Under
    torch.compile the three passes become one kernel that writes y in place; the operations are the same IEEE
    ones in the same order (a product, a maximum with 0, a sum: nothing to contract or reassociate), so the bits
    are the same; the gate's sigmoid stays an ATen call outside (ATen's and the compiler's exp may differ)."""
    if gate is not None:
        y.mul_(gate)
    return y.relu_().add_(residual)



def _nhwc_plane_stats(y):
    """Mean and max over H, W of a channels-last [T, B, C, H, W] tensor: [T, B, C] each. Reducing a non-innermost
    dimension with only a few channels innermost is slow on the CPU, so the maximum first reduces blocks of
    pixels with 128 values innermost, then the rest."""
    t, b, c, h, w = y.shape
    pixels = y.permute(0, 1, 3, 4, 2).reshape(t, b, h * w, c)  # a view: channels-last is this layout
    block = 128 // c
    if c < 32 and (h * w) % block == 0:
        peak = pixels.unflatten(2, (-1, block)).flatten(3).amax(2).unflatten(2, (block, c)).amax(2)
    else:
        peak = pixels.amax(2)
    return pixels.mean(2), peak


def _nhwc_pixel_stats(y):
    """[B, 2, H, W]: mean and max over T and C of a channels-last [T, B, C, H, W] tensor (T first: contiguous)."""
    pixels = y.permute(0, 1, 3, 4, 2)  # [T, B, H, W, C]
    return torch.stack((pixels.mean(0).mean(-1), pixels.amax(0).amax(-1)), dim=1)


class InferenceResidualBlock(nn.Module):
    """``SpikingResidualBlock`` for inference: the same layers (converted), the block output built in place."""

    def __init__(self, block, convert):
        super().__init__()
        self.spike_shortcut = block.spike_shortcut
        self.residual = convert(block.residual)
        self.shortcut = convert(block.shortcut)
        self.attn = convert(block.attn)
        first_neuron, shortcut_conv = self.residual[0], self.shortcut[0]
        if self.spike_shortcut and getattr(first_neuron, 'pack', False):  # its spikes feed the shortcut too
            if spike_conv.table_eligible(shortcut_conv):
                shortcut_conv.attach_spike_table()
            else:
                first_neuron.pack = False

    def forward(self, x):
        first_neuron, *rest = self.residual
        spikes = y = first_neuron(x)
        for module in rest:
            y = module(y)
        shortcut = self.shortcut(spikes if self.spike_shortcut else x)
        if isinstance(self.attn, InferenceAttention):  # it adds the shortcut first, in y's storage
            return self.attn(y, x, addend=shortcut)
        y = y.add_(shortcut)  # y is a fresh tensor of this block
        if isinstance(self.attn, nn.Identity):
            return y.add_(x)
        return self.attn(y) + x


# ---------------------------------------------------------------------------------------------------- conversion
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
        from spikingjelly.activation_based.neuron import BaseNode
        from spikerir_plugin.archs.spiking_blocks import FastMultiDimensionalAttention, SpikingResidualBlock
        if isinstance(module, BaseNode):
            return InferenceNeuron(module, self.compiled, self.exact) if neuron_spec(module) else module
        if isinstance(module, SpikingResidualBlock):
            return InferenceResidualBlock(module, self)
        if isinstance(module, FastMultiDimensionalAttention):
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


def _expanded_encode(self, x):
    """SpikingUNet.encode without materialising the T copies: the image conv's output seen T times (a view with
    stride 0 over T; the blocks only read it), each step contiguous as in the repeated tensor."""
    embedded = self.patch_embed(x.unsqueeze(0)).contiguous()
    return embedded.expand(self.T, *embedded.shape[1:])


def _expanded_encode_any_layout(self, x):
    """As _expanded_encode, keeping the conv's output layout (channels-last with exact=False)."""
    embedded = self.patch_embed(x.unsqueeze(0))
    return embedded.expand(self.T, *embedded.shape[1:])


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
    if hasattr(fast, 'encode') and hasattr(fast, 'patch_embed'):  # a SpikingUNet: no T copies of the embedding
        fast.encode = types.MethodType(_expanded_encode if exact else _expanded_encode_any_layout, fast)
    fast.eval()
    fast._inference_copy = True  # for_inference() on the copy returns the copy itself
    return fast


def _on_cpu(net):
    return all(p.device.type == 'cpu' for p in net.parameters())


def _fingerprint(net):
    """Storage and in-place version of every parameter and buffer: changes with optimizer steps, load_state_dict,
    EMA updates, running-statistics updates and device/dtype moves."""
    return tuple((t.data_ptr(), t._version, t.dtype, t.device, tuple(t.shape))
                 for t in (*net.parameters(), *net.buffers()))


_CACHE = weakref.WeakKeyDictionary()  # arch -> (fingerprint and options, inference copy)


class InferenceMixin:
    """``for_inference()`` on the spiking archs (cached per arch, rebuilt when its weights changed)."""

    def for_inference(self, exact=True, compile=False):
        """A frozen copy of this network for inference, to call under ``torch.no_grad()``: outputs equal this
        network in eval mode bit for bit (``exact=False``: faster, up to rare threshold flips; see
        ``fast_inference.py``).

        Contract: the copy is a snapshot of the weights and batch-norm statistics when it is built, on their device
        and dtype; this network is not modified (nor its train/eval mode). The copy is cached and returned again
        while every parameter and buffer keeps its storage and in-place version; after an optimizer step, an EMA
        update, a training forward (batch-norm statistics), ``load_state_dict`` or a device/dtype move, the next
        call builds a fresh copy. A copy kept by the caller is never updated: call ``for_inference()`` again after
        training. In-place edits of hyper-parameters (thresholds, swapped submodules) are not tracked: use
        ``build_inference_network`` for a fresh copy."""
        if getattr(self, '_inference_copy', False):
            return self
        key = (_fingerprint(self), bool(exact), bool(compile))
        cached = _CACHE.get(self)
        if cached is not None and cached[0] == key:
            return cached[1]
        fast = build_inference_network(self, exact=exact, compile=compile)
        _CACHE[self] = (key, fast)
        return fast
