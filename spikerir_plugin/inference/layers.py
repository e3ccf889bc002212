"""The layers of the inference copies (``convert.py`` swaps them in): neurons, convolutions, batch norms, the
attention and the spiking residual block for inference. Why each is exact, or how the fast ones differ: convert.py.
"""
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional
from torch import nn

from spikerir_plugin.archs.spiking_blocks import residual_with_spikes, temporal_channel_weight
from spikerir_plugin.ops import spike_conv
from spikerir_plugin.ops.neuron_loops import compiled_for, compiled_multi_step_spikes, multi_step_spikes, neuron_spec


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
        """Let this convolution read PackedSpikes (ops/spike_conv): the tables of its folded weights (CPU only)."""
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
        # the training module's pixel statistics, kept apart on purpose: one amax without indices (the training
        # side takes maxima with indices for its backward), plus channels-last and compiled variants; same values
        stats = _nhwc_pixel_stats(y) if nhwc else torch.stack((y.mean((0, 2)), y.amax((0, 2))), dim=1)
        return tail(y, torch.sigmoid(self.sa.conv(stats))[None], residual)

    def _temporal_channel_gate(self, y, nhwc):
        """The product of the temporal and channel gates, [T, B, C, 1, 1], or None without either."""
        if self.ta is None and self.ca is None:
            return None
        # the training module's reductions on NCHW (same calls, same bits); see _nhwc_* for channels-last
        plane_mean, plane_max = _nhwc_plane_stats(y) if nhwc else (y.mean((3, 4)), y.amax((3, 4)))
        return temporal_channel_weight(self.ta, self.ca, plane_mean, plane_max)[..., None, None]


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
        spikes, y = residual_with_spikes(self.residual, x)
        shortcut = self.shortcut(spikes if self.spike_shortcut else x)
        if isinstance(self.attn, InferenceAttention):  # it adds the shortcut first, in y's storage
            return self.attn(y, x, addend=shortcut)
        y = y.add_(shortcut)  # y is a fresh tensor of this block
        if isinstance(self.attn, nn.Identity):
            return y.add_(x)
        return self.attn(y) + x
