"""Spiking building blocks shared by ESDNet and SpikerIR (spikingjelly 2.x, multi-step tensors [T, B, C, H, W]).

Submodule names follow the official ESDNet model.py (MingTian99/ESDNet), so ESDNet checkpoints load strictly.
Neuron and tdBN settings are ESDNet's: LIF tau=2, decay_input=False, v_th=0.15, hard reset to 0, Sigmoid(4)
surrogate; tdBN alpha=1/sqrt(2).
"""
import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from spikingjelly.activation_based import base, layer

from spikerir_plugin.archs.neurons import (QuantizedRateActivation, RateActivation, StatelessIFNode,
                                           StatelessLearntThresholdLIFNode, StatelessLIFNode,
                                           StatelessParametricLIFNode)
from spikerir_plugin.archs.arch_util import pad_to_multiple
from spikerir_plugin.utils.snn import time_mean

V_TH = 0.15
TDBN_ALPHA = 1 / math.sqrt(2)
NEURONS = ('lif', 'plif', 'lif_vth', 'if', 'rate', 'rate<N>')  # 'plif': the LIF with a learnt time constant
#          (starts at the LIF's tau 2); 'lif_vth': the LIF with a learnt threshold (starts at v_th); 'rate',
#          'rate<N>': the analog twin (neurons.RateActivation, QuantizedRateActivation at N levels), not spiking
ATTENTIONS = ('fast', 'spikingjelly', 'none')
SHORTCUTS = ('analog', 'spike')


def check_choice(name, value, valid):
    if value not in valid:
        raise ValueError(f'{name}={value!r} is not supported; valid values: {list(valid)}')


def rate_steps(kind):
    """The N of a 'rate<N>' neuron (e.g. 'rate4' -> 4), else None."""
    if isinstance(kind, str) and kind.startswith('rate') and kind[4:].isdigit() and int(kind[4:]) >= 1:
        return int(kind[4:])
    return None


def check_neuron(kind, valid=NEURONS):
    """``valid`` lists the kinds an arch supports; 'rate<N>' stands for 'rate1', 'rate2', ..."""
    if kind in valid or ('rate<N>' in valid and rate_steps(kind) is not None):
        return
    check_choice('neuron', kind, valid)


def make_neuron(kind='lif', v_threshold=V_TH):
    check_neuron(kind)
    if kind == 'lif':
        return StatelessLIFNode(tau=2.0, decay_input=False, v_threshold=v_threshold, step_mode='m')
    if kind == 'plif':
        return StatelessParametricLIFNode(init_tau=2.0, decay_input=False, v_threshold=v_threshold, step_mode='m')
    if kind == 'lif_vth':
        return StatelessLearntThresholdLIFNode(tau=2.0, decay_input=False, v_threshold=v_threshold, step_mode='m')
    if kind == 'rate':
        return RateActivation(v_threshold)
    if rate_steps(kind) is not None:
        return QuantizedRateActivation(v_threshold, rate_steps(kind))
    return StatelessIFNode(v_threshold=v_threshold, step_mode='m')


def conv(in_channels, out_channels, kernel_size=3, stride=1, bias=False):
    return layer.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=bias, step_mode='m')


def tdbn(channels, v_th=V_TH):
    return layer.ThresholdDependentBatchNorm2d(alpha=TDBN_ALPHA, v_th=v_th, num_features=channels)


def check_attention_sizes(T, C, reduction_t, reduction_c, kernel_size=3, use_temporal=True, use_channel=True):
    """The temporal/channel MLPs squeeze T -> T // reduction_t and C -> C // reduction_c; both must stay >= 1."""
    if use_temporal and (reduction_t < 1 or T < reduction_t):
        raise ValueError(f'attention needs 1 <= reduction_t <= T, got T={T}, reduction_t={reduction_t}; '
                         f'use reduction_t <= T or attention="none"')
    if use_channel and (reduction_c < 1 or C < reduction_c):
        raise ValueError(f'attention needs 1 <= reduction_c <= channels, got channels={C}, reduction_c={reduction_c}; '
                         f'use a smaller reduction_c, a larger width or attention="none"')
    if kernel_size not in (3, 7):
        raise ValueError(f'attention kernel_size must be 3 or 7, got {kernel_size}')


class _PooledGate(nn.Module):
    """Shared MLP of one attention axis; `sharedMLP` has spikingjelly's keys and shapes (1x1x1 Conv3d weights)."""

    def __init__(self, planes, ratio):
        super().__init__()
        self.sharedMLP = nn.Sequential(nn.Conv3d(planes, planes // ratio, 1, bias=False), nn.ReLU(),
                                       nn.Conv3d(planes // ratio, planes, 1, bias=False))

    def forward(self, avg, peak):
        """avg, peak: [B, planes] pooled statistics -> gate [B, planes]."""
        hidden = F.relu(F.linear(torch.stack((avg, peak)), self.sharedMLP[0].weight.flatten(1)))
        return torch.sigmoid(F.linear(hidden, self.sharedMLP[2].weight.flatten(1)).sum(0))


class _SpatialGate(nn.Module):
    def __init__(self, kernel_size):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)


class FastMultiDimensionalAttention(nn.Module, base.MultiStepModule):
    """Drop-in for spikingjelly 2.0's `layer.MultiDimensionalAttention` (same arguments, parameters, state_dict keys
    and outputs): temporal -> channel -> spatial gating, then ReLU, on [T, B, C, H, W].

    The library pools with adaptive_avg/max_pool3d after transposing to [B, T, C, H, W]; that max pool took 84% of
    an ESDNet training step on an H100. Here the work on the full tensor is cut to what the maths needs:
    - one mean and one max per (t, b, c) plane give both the temporal and the channel statistics: the temporal gate
      g_t > 0 (a sigmoid) commutes with the channel max, max(g_t * x) = g_t * max(x), and scales the channel mean,
      so the gated tensor x * g_t is never materialised for them;
    - the temporal and channel gates are applied together, as one [T, B, C] weight, in one multiplication;
    - maxima come from max-with-indices reductions, whose backward scatters the gradient once, instead of amax's
      mask-and-count backward (several passes over the full tensor). On exactly tied maxima the gradient goes to
      one element, as with the library's max pooling.
    The MLPs run as matrix products on the pooled vectors.

    ``fuses_residual`` changes nothing here: it tells the inference conversion whether the block around this
    attention adds its residual through the attention (ESDNet's residual block) or after a plain call (VLIF).
    """

    def __init__(self, T, C, reduction_t=16, reduction_c=16, kernel_size=3,
                 use_temporal=True, use_channel=True, use_spatial=True, fuses_residual=True):
        super().__init__()
        if not (use_temporal or use_channel or use_spatial):
            raise ValueError('at least one of use_temporal, use_channel, use_spatial must be True')
        check_attention_sizes(T, C, reduction_t, reduction_c, kernel_size, use_temporal, use_channel)
        self.T = T
        # whether the inference copy may fuse the enclosing block's residual into this attention
        # (inference.InferenceAttention, called as attn(y, residual)); False keeps it a plain attn(y) call
        self.fuses_residual = fuses_residual
        self.ta = _PooledGate(T, reduction_t) if use_temporal else None
        self.ca = _PooledGate(C, reduction_c) if use_channel else None
        self.sa = _SpatialGate(kernel_size) if use_spatial else None

    def forward(self, x):
        if x.dim() != 5 or (self.ta is not None and x.shape[0] != self.T):
            raise ValueError(f'expected [T={self.T}, B, C, H, W], got {tuple(x.shape)}')
        if self.ta is not None or self.ca is not None:
            weight = temporal_channel_weight(self.ta, self.ca, x.mean((3, 4)), x.flatten(3).max(-1).values)
            x = x * weight[..., None, None]
        if self.sa is not None:  # one weight per (b, h, w), pooled over T and C
            peak = x.max(2).values.max(0).values
            stats = torch.stack((x.mean((0, 2)), peak), dim=1)
            x = x * torch.sigmoid(self.sa.conv(stats))[None]
        return F.relu(x)


def temporal_channel_weight(ta, ca, plane_mean, plane_max):
    """The product of the temporal gate ``ta`` and the channel gate ``ca`` (either may be None, not both), [T, B, C],
    from the mean and max of every (t, b, c) plane [T, B, C]. Shared by the training module and its inference
    copy, so both compute the gates with the same operations."""
    weight = None
    if ta is not None:  # one weight per (t, b), pooled over C, H, W
        gate_t = ta(plane_mean.mean(2).t(), plane_max.amax(2).t()).t()[:, :, None]
        plane_mean, plane_max, weight = plane_mean * gate_t, plane_max * gate_t, gate_t
    if ca is not None:  # one weight per (b, c), pooled over T, H, W of the temporally gated x
        gate_c = ca(plane_mean.mean(0), plane_max.amax(0))[None]
        weight = gate_c if weight is None else weight * gate_c
    return weight


def residual_with_spikes(residual, x):
    """(the spikes of the residual branch's first neuron, the branch's output): the branch run layer by layer, so
    that a shortcut can read those spikes."""
    first_neuron, *rest = residual
    spikes = y = first_neuron(x)
    for module in rest:
        y = module(y)
    return spikes, y


def make_attention(kind, T, C, reduction_t=4, reduction_c=16):
    check_choice('attention', kind, ATTENTIONS)
    if kind == 'none':
        return nn.Identity()
    check_attention_sizes(T, C, reduction_t, reduction_c)
    cls = FastMultiDimensionalAttention if kind == 'fast' else layer.MultiDimensionalAttention
    return cls(T=T, C=C, reduction_t=reduction_t, reduction_c=reduction_c, kernel_size=3)


@contextlib.contextmanager
def frozen_batchnorm_statistics(module):
    """Batch norms inside ``module`` normalise with batch statistics as usual but leave their running statistics
    (and batch counters) untouched: a recomputed forward must not count the same batch twice."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
             and m.track_running_stats]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, count) in zip(norms, saved):
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)



def recomputed(module, forward, x):
    """forward(x); with ``module.activation_checkpoint`` (``speed.checkpoint``) and gradients on, recomputed in
    backward instead of storing its activations, the recomputation leaving batch-norm statistics untouched."""
    if not (module.activation_checkpoint and torch.is_grad_enabled()):
        return forward(x)
    calls = []

    def run(inp):  # the second call is the recomputation during backward
        calls.append(None)
        with frozen_batchnorm_statistics(module) if len(calls) > 1 else contextlib.nullcontext():
            return forward(inp)

    return checkpoint(run, x, use_reentrant=False, preserve_rng_state=False)

class SpikingResidualBlock(nn.Module):
    """ESDNet's SRB: attn(residual(x) + shortcut(.)) + x, residual = [neuron, conv, tdBN] x 2.

    shortcut='analog' (ESDNet): the shortcut conv reads the real-valued block input, so it is a dense multiply-
    accumulate layer, run T times; in a small ESDNet-style net it is most of the energy. shortcut='spike': it reads
    the spikes of the residual's first neuron instead, so every conv of the block is spike-driven (accumulates only
    where a spike arrived). Same parameters and state_dict keys either way.
    """

    def __init__(self, dim, T=4, neuron='lif', attention='fast', reduction_t=4, reduction_c=16, shortcut='analog'):
        super().__init__()
        check_choice('shortcut', shortcut, SHORTCUTS)
        self.spike_shortcut = shortcut == 'spike'
        self.residual = nn.Sequential(make_neuron(neuron), conv(dim, dim), tdbn(dim),
                                      make_neuron(neuron), conv(dim, dim), tdbn(dim, V_TH * 0.2))
        self.shortcut = nn.Sequential(conv(dim, dim), tdbn(dim))
        self.attn = make_attention(attention, T, dim, reduction_t, reduction_c)
        self.activation_checkpoint = False  # speed.checkpoint: recompute in backward instead of storing

    def forward(self, x):
        return recomputed(self, self._forward, x)

    def _forward(self, x):
        if self.spike_shortcut:
            spikes, y = residual_with_spikes(self.residual, x)
            y = y + self.shortcut(spikes)
        else:
            y = self.residual(x) + self.shortcut(x)
        return self.attn(y) + x


class DownSampling(nn.Module):
    def __init__(self, dim, neuron='lif'):
        super().__init__()
        self.maxpool_conv = nn.Sequential(make_neuron(neuron), conv(dim, dim * 2, stride=2), tdbn(dim * 2))

    def forward(self, x):
        return self.maxpool_conv(x)


class UpSampling(nn.Module):
    """Bilinear x2 of all time steps at once (on the input's device), then LIF -> conv halving channels -> tdBN."""

    def __init__(self, dim, neuron='lif'):
        super().__init__()
        self.up = nn.Sequential(make_neuron(neuron), conv(dim, dim // 2), tdbn(dim // 2))

    def forward(self, x):
        big = F.interpolate(x.flatten(0, 1), scale_factor=2, mode='bilinear')
        return self.up(big.unflatten(0, x.shape[:2]))


class FeatureRefinementBlock(nn.Module):
    """ESDNet's ANN head on time-averaged features: (1 - t) * channel_gate + t * x, t a spatial gate."""

    def __init__(self, channel, reduction=8):
        super().__init__()
        self.ca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channel, channel // reduction, 1), nn.ReLU(True),
                                nn.Conv2d(channel // reduction, channel, 1), nn.Sigmoid())
        self.sa = nn.Sequential(nn.Conv2d(channel, channel, 3, 1, 1), nn.Conv2d(channel, channel // 8, 3, 1, 1),
                                nn.ReLU(True), nn.Conv2d(channel // 8, channel, 3, 1, 1), nn.Sigmoid())

    def forward(self, x):
        t = self.sa(x)
        return (1 - t) * self.ca(x) + t * x


class PatchEmbed(nn.Module):
    """The image convolution of the spiking U-Nets (SpikerIR, ESDNet, VLIF, SpikeRain): ``proj``."""

    def __init__(self, in_channels, dim, bias=False):
        super().__init__()
        self.proj = conv(in_channels, dim, bias=bias)

    def forward(self, x):
        return self.proj(x)


def concat_channels(a, b):
    """torch.cat([a, b], dim=2) of multi-step tensors, keeping a channels-last layout (C innermost, as a conv with
    channels-last weights returns it) instead of falling back to the default layout: same values either way."""
    if a.stride(2) == 1 and b.stride(2) == 1 and not (a.is_contiguous() and b.is_contiguous()):
        return torch.cat([a.permute(0, 1, 3, 4, 2), b.permute(0, 1, 3, 4, 2)], dim=4).permute(0, 1, 4, 2, 3)
    return torch.cat([a, b], dim=2)


def check_block_counts(name, counts, at_least=3):
    if len(counts) < at_least or any(not isinstance(n, int) or n < 0 for n in counts):
        raise ValueError(f'{name} must list >= {at_least} non-negative block counts (levels 1..3), got {counts}')


class SpikingUNet(nn.Module):
    """ESDNet's 3-level spiking U-Net body with direct encoding and a mean-over-T readout.

    Level widths dim, 2*dim, 4*dim; level 2 fuses the skip by concat + LIF/1x1 conv/tdBN; level 1 concatenates the
    skip without reduction, so decoder_level1 runs at 2*dim. `enc_blocks`/`dec_blocks` are indexed by level
    (index 0 = level 1). Subclasses define `head(features)` mapping [B, 2*dim, H, W] to the output residual.
    H and W are reflect-padded to multiples of 4 and cropped back. Every neuron starts each call at rest
    (archs/neurons.py), so the output depends on the input alone. ``spikerir_plugin.inference.inference_network``
    gives its inference copy.
    """

    has_inference_copy = True  # spikerir_plugin.inference converts it

    def __init__(self, in_channels, dim, enc_blocks, dec_blocks, T, neuron='lif', attention='fast',
                 reduction_t=4, reduction_c=16, bias=False, shortcut='analog'):
        super().__init__()
        check_block_counts('encoder block counts', enc_blocks)
        check_block_counts('decoder block counts', dec_blocks)
        check_neuron(neuron)
        check_choice('attention', attention, ATTENTIONS)
        check_choice('shortcut', shortcut, SHORTCUTS)
        if not isinstance(T, int) or T < 1:
            raise ValueError(f'T must be a positive int, got {T!r}')
        self.T = T

        def stage(channels, count):
            return nn.Sequential(*[SpikingResidualBlock(channels, T, neuron, attention, reduction_t, reduction_c,
                                                        shortcut) for _ in range(count)])

        self.patch_embed = PatchEmbed(in_channels, dim)
        self.encoder_level1 = stage(dim, enc_blocks[0])
        self.down1_2 = DownSampling(dim, neuron)
        self.encoder_level2 = stage(dim * 2, enc_blocks[1])
        self.down2_3 = DownSampling(dim * 2, neuron)
        self.encoder_level3 = stage(dim * 4, enc_blocks[2])
        self.decoder_level3 = stage(dim * 4, dec_blocks[2])
        self.up3_2 = UpSampling(dim * 4, neuron)
        self.reduce_chan_level2 = nn.Sequential(make_neuron(neuron), conv(dim * 4, dim * 2, 1, bias=bias),
                                                tdbn(dim * 2))
        self.decoder_level2 = stage(dim * 2, dec_blocks[1])
        self.up2_1 = UpSampling(dim * 2, neuron)
        self.decoder_level1 = stage(dim * 2, dec_blocks[0])
        self.expand_embedding = False  # inference copies: one embedding seen T times (the blocks only read it)

    def encode(self, x):
        """Direct encoding: [B, C, H, W] -> the image conv's output repeated at every time step [T, B, dim, H, W].

        Identical to convolving the image repeated T times (as the official ESDNet does) at 1/T of the cost. With
        ``expand_embedding`` the T steps are a stride-0 view of one output instead of T copies."""
        embedded = self.patch_embed(x.unsqueeze(0))
        if self.expand_embedding:
            return embedded.expand(self.T, *embedded.shape[1:])
        return embedded.repeat(self.T, 1, 1, 1, 1)

    def features(self, embedded):
        """[T, B, dim, H, W] (H, W multiples of 4) -> decoder level-1 features [T, B, 2*dim, H, W]."""
        enc1 = self.encoder_level1(embedded)
        enc2 = self.encoder_level2(self.down1_2(enc1))
        dec3 = self.decoder_level3(self.encoder_level3(self.down2_3(enc2)))
        dec2 = self.decoder_level2(self.reduce_chan_level2(concat_channels(self.up3_2(dec3), enc2)))
        return self.decoder_level1(concat_channels(self.up2_1(dec2), enc1))

    def head(self, features):
        raise NotImplementedError

    def hint_layers(self):
        """Decoder levels offered as distillation hints, coarse to fine (1/4, 1/2, 1 of the input size)."""
        return ['decoder_level3', 'decoder_level2', 'decoder_level1']

    def forward(self, x):
        if x.dim() != 4:
            raise ValueError(f'{type(self).__name__} expects images [B, C, H, W], got shape {tuple(x.shape)}')
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, 4)
        out = self.head(time_mean(self.features(self.encode(x)))) + x
        return out[..., :h, :w]
