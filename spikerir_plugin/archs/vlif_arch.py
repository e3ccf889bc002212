"""VLIF (Chen et al., AAAI 2026, "Exploring the Potentials of Spiking Neural Networks for Image Deraining",
arXiv 2512.02258; official code github.com/ChrisChen1023/VLIF, MIT license).

State_dict keys and shapes equal the official ``model.py`` (``VLIFNet``), so its released checkpoints (Rain200H,
Rain1200: ``use_refinement=False``; Rain200L: ``use_refinement=True``) load with strict=True; outputs equal the
official network's (tests/archs/test_zoo.py runs the MIT-licensed reference copy kept in tests/reference/). Differences
from the official code, none of which changes the parameters:
- runs on any device (no ``.cuda()``, no cupy backend); the image conv runs once and its output is repeated over T
  (the official code convolves the image repeated T times: same values, 1/T of the cost);
- any T: the attention layers and the level-1 time gate are built for the given T (the official code hard-codes
  T = 4 there; with T = 4 the shapes are the official ones);
- any H, W: reflect-padded to multiples of 8 (the official net needs them) and cropped back;
- the multi-step attention is the plugin's fast equivalent of spikingjelly's ``MultiDimensionalAttention``
  (``spiking_blocks.FastMultiDimensionalAttention``: same parameters and outputs; a max's gradient is shared
  differently among exactly tied maxima); ``attention='spikingjelly'`` runs the library module (the same bits and
  gradients as the official code);
- every neuron starts each call at rest (archs/neurons.py): the output depends on the input alone.

Neurons. LIF: tau 2, no input decay, threshold 0.15, hard reset, Sigmoid(4) surrogate (ESDNet's). The "visual LIF"
of the paper (``PixelShuffleLIFBlock``) pixel-unshuffles a feature map by 2, runs a multi-level neuron
(``neurons.MultiLevelSpikeNode``: spikes k/4, k = 0..4, decay 0.25) over the 4 pixels of each 2x2 patch as 4T
time steps, folds the result back to 4C channels at half size, upsamples it bilinearly and mixes it back to C
channels with a 1x1 conv. Each spiking residual block combines a neuron's spikes s with its analog input x as
a * s + b * (x - s) + x * s (learnable scalars a, b; the paper's decomposition into high and low frequencies)
before each conv, so those convs read real values (MACs in the energy report, not SynOps).

``adjust_before_upsample=True`` runs the 1x1 channel mix of the visual LIF before the bilinear upsampling instead
of after it: the same function (both are linear; equal up to float rounding), 1/4 of the multiplies, and the conv
then reads the multi-level spikes themselves (counted as spike-driven SynOps by the energy report). Not the
official order, so off by default.
"""
import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from spikingjelly.activation_based import layer
from torch import nn

from spikerir_plugin.archs.neurons import MultiLevelSpikeNode
from spikerir_plugin.archs.arch_util import pad_to_multiple
from spikerir_plugin.archs.spiking_blocks import (V_TH, FastMultiDimensionalAttention, PatchEmbed,
                                                  check_attention_sizes, check_block_counts, conv, make_neuron,
                                                  recomputed, tdbn)
from spikerir_plugin.utils.snn import time_mean

PATCH = 2  # the visual LIF's pixel-unshuffle factor (r); r * r = 4 sub-steps per time step


def make_vlif_attention(kind, T, C, reduction_t, reduction_c):
    """spikingjelly's ``MultiDimensionalAttention`` (temporal -> channel -> spatial gates, ReLU), or its fast
    equivalent with the same parameter names. VLIF adds its residuals after a plain ``attn(y)`` call, so the fast
    one is built with ``fuses_residual=False``: its inference copy stays that plain call."""
    if kind == 'fast':
        return FastMultiDimensionalAttention(T, C, reduction_t, reduction_c, kernel_size=3, fuses_residual=False)
    if kind == 'spikingjelly':
        check_attention_sizes(T, C, reduction_t, reduction_c)
        return layer.MultiDimensionalAttention(T=T, C=C, reduction_t=reduction_t, reduction_c=reduction_c,
                                               kernel_size=3)
    raise ValueError(f"attention={kind!r} is not supported; valid values: ['fast', 'spikingjelly']")


class TimeGate(nn.Module):
    """The official ``TimeAttention``: a sigmoid gate per (batch, step) from the average and max over C, H, W of
    [B, steps, C, H, W], through a shared 1x1x1-conv MLP."""

    def __init__(self, steps, ratio=4):
        super().__init__()
        if steps < ratio:
            raise ValueError(f'the level-1 time gate squeezes 4*T={steps} steps by {ratio}: needs T >= 1')
        self.sharedMLP = nn.Sequential(nn.Conv3d(steps, steps // ratio, 1, bias=False), nn.ReLU(),
                                       nn.Conv3d(steps // ratio, steps, 1, bias=False))

    def forward(self, x):
        avg, peak = F.adaptive_avg_pool3d(x, 1), F.adaptive_max_pool3d(x, 1)
        return torch.sigmoid(self.sharedMLP(avg) + self.sharedMLP(peak))


def unshuffle_to_steps(x):
    """[T, B, C, H, W] -> [4T, B, C, H/2, W/2]: the 2x2 patch pixels become sub-steps t*4 + (2i + j)."""
    t, b, c, h, w = x.shape
    small = F.pixel_unshuffle(x.reshape(t * b, c, h, w), PATCH).reshape(t, b, c, PATCH * PATCH, h // 2, w // 2)
    return small.permute(0, 3, 1, 2, 4, 5).reshape(t * PATCH * PATCH, b, c, h // 2, w // 2)


def steps_to_channels(s, t):
    """[4T, B, C, h, w] -> [T, B, 4C, h, w], channel c*4 + (2i + j) (pixel-unshuffle's channel order)."""
    _, b, c, h, w = s.shape
    return s.reshape(t, PATCH * PATCH, b, c, h, w).permute(0, 2, 3, 1, 4, 5).reshape(t, b, c * PATCH * PATCH, h, w)


def upsample2(x, size=None):
    """Bilinear x2 (align_corners=False) of every time step of [T, B, C, H, W] at once."""
    big = F.interpolate(x.flatten(0, 1), size=size, scale_factor=None if size else 2, mode='bilinear',
                        align_corners=False)
    return big.unflatten(0, x.shape[:2])


class PixelShuffleLIF(nn.Module):
    """The visual LIF (official ``PixelShuffleLIFBlock``): multi-level spikes over the 2x2 patch pixels, back to
    full size by bilinear upsampling, then a 1x1 conv 4C -> C (``channel_adjust``)."""

    def __init__(self, dim, adjust_before_upsample=False):
        super().__init__()
        self.lif_node = MultiLevelSpikeNode(levels=4, decay=0.25)
        self.channel_adjust = layer.Conv2d(dim * PATCH * PATCH, dim, 1, bias=False, step_mode='m')
        self.adjust_before_upsample = adjust_before_upsample

    def forward(self, x):
        t, _, _, h, w = x.shape
        spikes = steps_to_channels(self.lif_node(unshuffle_to_steps(x)), t)
        if self.adjust_before_upsample:
            return upsample2(self.channel_adjust(spikes), (h, w))
        return self.channel_adjust(upsample2(spikes, (h, w)))


class VLIFResidualBlock(nn.Module):
    """VLIF's spiking residual block: two [neuron -> decompose -> conv -> tdBN] stages (a LIF, then the visual LIF),
    a conv/tdBN shortcut on the block input, attention, and the block input added back."""

    def __init__(self, dim, T=4, reduction_t=4, reduction_c=16, adjust_before_upsample=False, attention='fast'):
        super().__init__()
        self.lif_1 = make_neuron('lif')
        self.conv1 = conv(dim, dim)
        self.bn1 = tdbn(dim)
        self.high_freq_scale_1 = nn.Parameter(torch.ones(1))
        self.low_freq_scale_1 = nn.Parameter(torch.ones(1))
        self.lif_2 = PixelShuffleLIF(dim, adjust_before_upsample)
        self.conv2 = conv(dim, dim)
        self.bn2 = tdbn(dim, V_TH * 0.2)
        self.high_freq_scale_2 = nn.Parameter(torch.ones(1))
        self.low_freq_scale_2 = nn.Parameter(torch.ones(1))
        self.shortcut = nn.Sequential(conv(dim, dim), tdbn(dim))
        self.attn = make_vlif_attention(attention, T, dim, reduction_t, reduction_c)
        self.activation_checkpoint = False  # speed.checkpoint: recompute in backward instead of storing

    @staticmethod
    def _decompose(x, spikes, high, low):
        """high * s + low * (x - s) + x * s: the spikes (high frequencies), the rest, and x gated by the spikes."""
        return high * spikes + low * (x - spikes) + x * spikes

    def forward(self, x):
        return recomputed(self, self._forward, x)

    def _forward(self, x):
        y = self.bn1(self.conv1(self._decompose(x, self.lif_1(x), self.high_freq_scale_1, self.low_freq_scale_1)))
        y = self._decompose(y, self.lif_2(y), self.high_freq_scale_2, self.low_freq_scale_2)
        y = self.bn2(self.conv2(y)) + self.shortcut(x)
        return self.attn(y) + x


class SUNetLevel1Block(nn.Module):
    """The official ``SUNet_Level1_Block`` (the paper's spiking multi-scale unit): a residual block, multi-level
    spikes over the 2x2 patch pixels kept as 4T steps, a time gate, a 3-D conv folding the 4 sub-steps of each
    step back to T (ReLU), two [LIF -> conv -> tdBN -> attention] stages at half size, bilinear upsampling, the
    residual block's output added, and a last attention."""

    def __init__(self, dim, T=4, reduction_t=4, reduction_c=16, adjust_before_upsample=False, attention='fast'):
        super().__init__()
        self.initial_residual = VLIFResidualBlock(dim, T, reduction_t, reduction_c, adjust_before_upsample,
                                                  attention)
        self.lif_node = MultiLevelSpikeNode(levels=4, decay=0.25)
        self.time_attention = TimeGate(T * PATCH * PATCH, ratio=4)
        self.temporal_compress = nn.Sequential(
            nn.Conv3d(dim, dim, kernel_size=(PATCH * PATCH, 1, 1), stride=(PATCH * PATCH, 1, 1), bias=False),
            nn.ReLU(inplace=True))
        for i in (1, 2):
            setattr(self, f'lif_{i}', make_neuron('lif'))
            setattr(self, f'conv_{i}', conv(dim, dim))
            setattr(self, f'bn_{i}', tdbn(dim))
            setattr(self, f'attn_{i}', make_vlif_attention(attention, T, dim, reduction_t, reduction_c))
        self.final_attn = make_vlif_attention(attention, T, dim, reduction_t, reduction_c)

    def forward(self, x):
        skip = self.initial_residual(x)
        spikes = self.lif_node(unshuffle_to_steps(skip)).transpose(0, 1)  # [B, 4T, C, h, w]
        gated = spikes * self.time_attention(spikes)
        y = self.temporal_compress(gated.permute(0, 2, 1, 3, 4)).permute(2, 0, 1, 3, 4)  # [T, B, C, h, w]
        for i in (1, 2):
            y = getattr(self, f'bn_{i}')(getattr(self, f'conv_{i}')(getattr(self, f'lif_{i}')(y)))
            y = getattr(self, f'attn_{i}')(y)
        return self.final_attn(upsample2(y) + skip)


class VLIFDownSampling(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.lif = make_neuron('lif')
        self.conv = conv(dim, dim * 2, stride=2)
        self.bn = tdbn(dim * 2)

    def forward(self, x):
        return self.bn(self.conv(self.lif(x)))


class VLIFUpSampling(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.lif = make_neuron('lif')
        self.conv = conv(dim, dim // 2)
        self.bn = tdbn(dim // 2)

    def forward(self, x):
        return self.bn(self.conv(self.lif(upsample2(x))))


@ARCH_REGISTRY.register()
class VLIF(nn.Module):
    """VLIF deraining net. Defaults are the released configuration (the official ``model()``): dim 48, encoder
    4/4/8 (level 1 is one multi-scale unit), decoder 2/2 (levels 3, 2; level 1 is two multi-scale units), T = 4;
    ``use_refinement=True`` (four more residual blocks at level 1) for the Rain200L weights.

    Args:
        inp_channels, out_channels, dim, en_num_blocks, de_num_blocks, bias, T, use_refinement: as the official
            ``VLIFNet`` (block lists have 4 entries; indices 1 and 2 are used, as there).
        reduction_t, reduction_c: squeeze ratios of the attention's temporal and channel MLPs (official: 4, 16;
            need T >= reduction_t and dim >= reduction_c: lower reduction_c for narrow test widths).
        adjust_before_upsample: the visual LIF's 1x1 conv before its upsampling (see the module docstring).
        attention: 'fast' (default; the same outputs, faster) or 'spikingjelly' (the library module the official
            code uses; the two differ only in how a max's gradient is shared among exactly tied maxima).

    Only spiking neurons: there is no ``neuron='rate'`` analog twin (the multi-level neuron and the x - LIF(x)
    decomposition have no rate counterpart defined by the paper).
    """

    has_inference_copy = True  # spikerir_plugin.inference converts it

    def __init__(self, inp_channels=3, out_channels=3, dim=48, en_num_blocks=(4, 4, 8, 8),
                 de_num_blocks=(2, 2, 2, 2), bias=False, T=4, use_refinement=False, reduction_t=4, reduction_c=16,
                 adjust_before_upsample=False, attention='fast'):
        super().__init__()
        check_block_counts('en_num_blocks', list(en_num_blocks))
        check_block_counts('de_num_blocks', list(de_num_blocks))
        if not isinstance(T, int) or T < 1:
            raise ValueError(f'T must be a positive int, got {T!r}')
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f'dim must be a positive int, got {dim!r}')
        self.T, self.inp_channels, self.use_refinement = T, inp_channels, use_refinement
        args = dict(T=T, reduction_t=reduction_t, reduction_c=reduction_c, attention=attention)

        def stage(channels, count):
            return nn.Sequential(*[VLIFResidualBlock(channels, adjust_before_upsample=adjust_before_upsample,
                                                     **args) for _ in range(count)])

        def unit(channels):
            return SUNetLevel1Block(channels, adjust_before_upsample=adjust_before_upsample, **args)

        self.patch_embed = PatchEmbed(inp_channels, dim)
        self.encoder_level1 = unit(dim)
        self.down1_2 = VLIFDownSampling(dim)
        self.encoder_level2 = stage(dim * 2, en_num_blocks[1])
        self.down2_3 = VLIFDownSampling(dim * 2)
        self.encoder_level3 = stage(dim * 4, en_num_blocks[2])
        self.decoder_level3 = stage(dim * 4, de_num_blocks[2])
        self.up3_2 = VLIFUpSampling(dim * 4)
        self.lif_level2 = make_neuron('lif')
        self.reduce_conv_level2 = conv(dim * 4, dim * 2, 1, bias=bias)
        self.reduce_bn_level2 = tdbn(dim * 2)
        self.decoder_level2 = stage(dim * 2, de_num_blocks[1])
        self.up2_1 = VLIFUpSampling(dim * 2)
        self.lif_level1 = make_neuron('lif')
        self.reduce_conv_level1 = conv(dim * 2, dim, 1, bias=bias)
        self.reduce_bn_level1 = tdbn(dim)
        self.decoder_level1 = unit(dim)
        self.additional_sunet_level1 = unit(dim)
        if use_refinement:
            self.refinement_blocks = stage(dim, 4)
        self.output = nn.Sequential(nn.Conv2d(dim, out_channels, 3, 1, 1))

    def hint_layers(self):
        """Decoder outputs offered as distillation hints, coarse to fine (1/4, 1/2, 1 of the input size; C = 4*dim,
        2*dim, dim): the last level-1 module is the one before the head."""
        return ['decoder_level3', 'decoder_level2',
                'refinement_blocks' if self.use_refinement else 'additional_sunet_level1']

    def encode(self, x):
        """[B, C, H, W] -> the image conv's output at every time step [T, B, dim, H, W] (direct encoding)."""
        return self.patch_embed(x.unsqueeze(0)).repeat(self.T, 1, 1, 1, 1)

    def features(self, embedded):
        enc1 = self.encoder_level1(embedded)
        enc2 = self.encoder_level2(self.down1_2(enc1))
        dec3 = self.decoder_level3(self.encoder_level3(self.down2_3(enc2)))
        y = torch.cat([self.up3_2(dec3), enc2], dim=2)
        dec2 = self.decoder_level2(self.reduce_bn_level2(self.reduce_conv_level2(self.lif_level2(y))))
        y = torch.cat([self.up2_1(dec2), enc1], dim=2)
        y = self.decoder_level1(self.reduce_bn_level1(self.reduce_conv_level1(self.lif_level1(y))))
        y = self.additional_sunet_level1(y)
        return self.refinement_blocks(y) if self.use_refinement else y

    def forward(self, x):
        if x.dim() != 4:
            raise ValueError(f'VLIF expects images [B, C, H, W], got shape {tuple(x.shape)}')
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, 8)
        out = self.output(time_mean(self.features(self.encode(x)))) + x
        return out[..., :h, :w]
