"""SpikeRain ("SpikeRain: Towards Energy-Efficient Single Image Deraining with Spiking Neural Networks", under
review at WACV 2026; code github.com/inzamamulDU/SpikeRain, ``model/spikeRain.py`` and ``model/subModules.py``).

The official repository has no license, so this is our own implementation of the network its code describes (no
code taken from it). Its state_dict keys and shapes are those of the official ``SpikeRain`` module, so weights
trained with the official code would load strictly (the repository releases none); the outputs were checked once
against the official code (tests/archs/test_zoo.py records the numbers). Differences from the official code, none of
which changes the parameters: any device (no ``.cuda()``), the image conv runs once and its output is repeated
over T (same values), any H, W (reflect-padded to multiples of 4, cropped back), neurons start each call at rest
(archs/neurons.py), and ``neuron='rate'`` builds the analog twin (same layers and keys, rate activations).

Structure (paper: Dense Spiking Residual Block, Multi-Dimensional Spiking Attention, Adaptive Residual Feature
Enhancement): ESDNet's 3-level U-Net (direct encoding, LIF tau 2 / threshold 0.15 / no input decay / hard reset,
level 2 fuses its skip with LIF -> 1x1 conv -> BN, level 1 concatenates it) with
- DSRB blocks: 4 densely connected [LIF -> 3x3 conv (growth 24) -> BN] layers, LIF -> 1x1 conv back to C, the
  attention, and the block input added;
- attention (no ReLU): a sigmoid gate per image from the mean of everything, a channel gate from the per-channel
  mean (MLP with bias), a spatial 3x3 gate per time step on the channel mean;
- BN layers that are plain batch norms over T*B (named ThresholdDependentBatchNorm2d in the official code, but
  without a threshold scaling);
- a learnt softmax-weighted sum over T instead of the mean, then ARFE (channel and spatial gates mixed by a
  learnt 1x1 gate, plus the input), a 3x3 conv and the global residual.
"""
import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from spikerir_plugin.archs.arch_util import pad_to_multiple
from spikerir_plugin.archs.spiking_blocks import (PatchEmbed, check_block_counts, check_choice, conv, make_neuron,
                                                  recomputed)

# The official SpikeRainFactory variants; 'M' is the one its train.py and test.py use (the published model).
PRESETS = {
    'S': dict(dim=32, en_num_blocks=(2, 2, 4, 4), de_num_blocks=(1, 1, 1, 1)),
    'M': dict(dim=48, en_num_blocks=(4, 4, 8, 8), de_num_blocks=(2, 2, 2, 2)),
    'L': dict(dim=64, en_num_blocks=(6, 6, 8, 10), de_num_blocks=(4, 4, 4, 4)),
}
NEURONS = ('lif', 'rate')


class SeqBatchNorm(nn.Module):
    """A 2-D batch norm over T*B of a multi-step [T, B, C, H, W] tensor (4-D inputs as they are); key ``bn``."""

    def __init__(self, channels):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        if x.dim() == 5:
            return self.bn(x.flatten(0, 1)).unflatten(0, x.shape[:2])
        return self.bn(x)


class SpikeRainAttention(nn.Module):
    """Temporal, channel and spatial sigmoid gates on [T, B, C, H, W], applied in that order (no ReLU).

    Parameter layout of the official module: ``temporal_fc.1`` (1x1x1 conv 1 -> 1), ``channel_fc.1/.3`` (1x1x1 conv
    MLP C -> C // reduction_c -> C, with biases), ``spatial_conv.0`` (1x3x3 conv 1 -> 1). Works for any T."""

    def __init__(self, C, reduction_c=16, kernel_size=3):
        super().__init__()
        if reduction_c < 1 or C < reduction_c:
            raise ValueError(f'attention needs 1 <= reduction_c <= channels, got channels={C}, '
                             f'reduction_c={reduction_c}')
        self.temporal_fc = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Conv3d(1, 1, 1), nn.Sigmoid())
        self.channel_fc = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Conv3d(C, C // reduction_c, 1),
                                        nn.ReLU(inplace=True), nn.Conv3d(C // reduction_c, C, 1), nn.Sigmoid())
        pad = kernel_size // 2
        self.spatial_conv = nn.Sequential(nn.Conv3d(1, 1, (1, kernel_size, kernel_size), padding=(0, pad, pad)),
                                          nn.Sigmoid())

    def forward(self, x):
        volume = x.permute(1, 2, 0, 3, 4)  # [B, C, T, H, W]: the layout of the 3-D convs
        gated = volume * self.temporal_fc(volume.mean(1, keepdim=True))  # one weight per image
        gated = gated * self.channel_fc(gated)  # one weight per (image, channel)
        gated = gated * self.spatial_conv(gated.mean(1, keepdim=True))  # one weight per (image, step, pixel)
        return gated.permute(2, 0, 1, 3, 4).contiguous()


class DSRB(nn.Module):
    """Dense spiking residual block: ``num_layers`` [neuron -> 3x3 conv -> BN] layers, each reading the block
    input and every earlier layer's output (concatenated), a [neuron -> 1x1 conv] fusion back to ``dim``
    channels (``lff``), the attention, and the block input added."""

    def __init__(self, dim, growth_rate=24, num_layers=4, neuron='lif', reduction_c=16):
        super().__init__()
        self.layers = nn.ModuleList()
        for i in range(num_layers):
            self.layers.append(nn.Sequential(make_neuron(neuron), conv(dim + i * growth_rate, growth_rate),
                                             SeqBatchNorm(growth_rate)))
        self.lff = nn.Sequential(make_neuron(neuron), conv(dim + num_layers * growth_rate, dim, 1))
        self.attn = SpikeRainAttention(dim, reduction_c)
        self.activation_checkpoint = False  # speed.checkpoint: recompute in backward instead of storing

    def forward(self, x):
        return recomputed(self, self._forward, x)

    def _forward(self, x):
        features = [x]
        for dense_layer in self.layers:
            features.append(dense_layer(torch.cat(features, dim=2)))
        return self.attn(self.lff(torch.cat(features, dim=2))) + x


class SpikeRainDownSampling(nn.Module):
    def __init__(self, dim, neuron='lif'):
        super().__init__()
        self.maxpool_conv = nn.Sequential(make_neuron(neuron), conv(dim, dim * 2, stride=2), SeqBatchNorm(dim * 2))

    def forward(self, x):
        return self.maxpool_conv(x)


class SpikeRainUpSampling(nn.Module):
    def __init__(self, dim, neuron='lif'):
        super().__init__()
        self.up = nn.Sequential(make_neuron(neuron), conv(dim, dim // 2), SeqBatchNorm(dim // 2))

    def forward(self, x):
        big = F.interpolate(x.flatten(0, 1), scale_factor=2, mode='bilinear', align_corners=False)
        return self.up(big.unflatten(0, x.shape[:2]))


class TemporalFusion(nn.Module):
    """sum_t softmax(w)_t * x_t: a learnt convex combination of the T steps ([T, B, ...] -> [B, ...])."""

    def __init__(self, T):
        super().__init__()
        self.weights = nn.Parameter(torch.full((T,), 1.0 / T))

    def forward(self, x):
        if x.shape[0] != self.weights.numel():
            raise ValueError(f'TemporalFusion was built for T={self.weights.numel()}, got {x.shape[0]} steps')
        return torch.tensordot(F.softmax(self.weights, dim=0), x, dims=1)


class ARFE(nn.Module):
    """Adaptive residual feature enhancement: a channel-gated and a spatially gated copy of x, mixed per pixel
    and channel by a learnt sigmoid gate over [x, both copies], plus x."""

    def __init__(self, channel, reduction=8):
        super().__init__()
        self.ca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channel, channel // reduction, 1),
                                nn.ReLU(inplace=True), nn.Conv2d(channel // reduction, channel, 1), nn.Sigmoid())
        self.sa = nn.Sequential(nn.Conv2d(channel, channel // 8, 1), nn.ReLU(inplace=True),
                                nn.Conv2d(channel // 8, 1, 5, padding=2), nn.Sigmoid())
        self.gate = nn.Sequential(nn.Conv2d(channel * 3, channel, 1), nn.Sigmoid())

    def forward(self, x):
        by_channel, by_pixel = x * self.ca(x), x * self.sa(x)
        mix = self.gate(torch.cat([x, by_channel, by_pixel], dim=1))
        return mix * by_channel + (1 - mix) * by_pixel + x


@ARCH_REGISTRY.register()
class SpikeRain(nn.Module):
    """SpikeRain deraining net; defaults are the published SpikeRain-M (dim 48, encoder 4/4/8, decoder 2/2/2, T=4).

    Args:
        inp_channels, out_channels, dim, en_num_blocks, de_num_blocks, bias, T: as the official ``SpikeRain``
            (block lists have 4 entries, indices 0..2 are used); ``preset`` 'S' | 'M' | 'L' (the official factory's
            variants) sets dim and the block counts, explicit arguments override it.
        growth_rate, dense_layers: DSRB growth and depth (official: 24, 4).
        reduction_c: the attention's channel squeeze (official 16; dim >= reduction_c).
        neuron: 'lif' (default) | 'rate' (the analog twin: the same layers and keys, no spikes; keep T, since
            TemporalFusion's weights have T entries).
    """

    has_inference_copy = True  # spikerir_plugin.inference converts it

    def __init__(self, inp_channels=3, out_channels=3, preset='M', dim=None, en_num_blocks=None,
                 de_num_blocks=None, bias=False, T=4, growth_rate=24, dense_layers=4, reduction_c=16, neuron='lif'):
        super().__init__()
        if preset not in PRESETS:
            raise ValueError(f'SpikeRain preset {preset!r} is unknown; valid presets: {sorted(PRESETS)}')
        check_choice('neuron', neuron, NEURONS)
        size = dict(PRESETS[preset])
        size.update({k: v for k, v in dict(dim=dim, en_num_blocks=en_num_blocks, de_num_blocks=de_num_blocks).items()
                     if v is not None})
        dim, enc, dec = size['dim'], list(size['en_num_blocks']), list(size['de_num_blocks'])
        check_block_counts('en_num_blocks', enc)
        check_block_counts('de_num_blocks', dec)
        if not isinstance(T, int) or T < 1:
            raise ValueError(f'T must be a positive int, got {T!r}')
        self.T, self.inp_channels = T, inp_channels

        def stage(channels, count):
            return nn.Sequential(*[DSRB(channels, growth_rate, dense_layers, neuron, reduction_c)
                                   for _ in range(count)])

        self.patch_embed = PatchEmbed(inp_channels, dim)
        self.encoder_level1 = stage(dim, enc[0])
        self.downsample_1_to_2 = SpikeRainDownSampling(dim, neuron)
        self.encoder_level2 = stage(dim * 2, enc[1])
        self.downsample_2_to_3 = SpikeRainDownSampling(dim * 2, neuron)
        self.encoder_level3 = stage(dim * 4, enc[2])
        self.decoder_level3 = stage(dim * 4, dec[2])
        self.upsample_3_to_2 = SpikeRainUpSampling(dim * 4, neuron)
        self.reduce_channels_2 = nn.Sequential(make_neuron(neuron), conv(dim * 4, dim * 2, 1, bias=bias),
                                               SeqBatchNorm(dim * 2))
        self.decoder_level2 = stage(dim * 2, dec[1])
        self.upsample_2_to_1 = SpikeRainUpSampling(dim * 2, neuron)
        self.decoder_level1 = stage(dim * 2, dec[0])
        self.temporal_fusion = TemporalFusion(T)
        self.refinement = ARFE(dim * 2, reduction=8)
        self.output_conv = nn.Conv2d(dim * 2, out_channels, 3, 1, 1)

    def hint_layers(self):
        """Decoder levels offered as distillation hints, coarse to fine (1/4, 1/2, 1 of the input size; C = 4*dim,
        2*dim, 2*dim)."""
        return ['decoder_level3', 'decoder_level2', 'decoder_level1']

    def encode(self, x):
        """[B, C, H, W] -> the image conv's output at every time step [T, B, dim, H, W] (direct encoding)."""
        return self.patch_embed(x.unsqueeze(0)).repeat(self.T, 1, 1, 1, 1)

    def features(self, embedded):
        enc1 = self.encoder_level1(embedded)
        enc2 = self.encoder_level2(self.downsample_1_to_2(enc1))
        dec3 = self.decoder_level3(self.encoder_level3(self.downsample_2_to_3(enc2)))
        y = self.reduce_channels_2(torch.cat([self.upsample_3_to_2(dec3), enc2], dim=2))
        dec2 = self.decoder_level2(y)
        return self.decoder_level1(torch.cat([self.upsample_2_to_1(dec2), enc1], dim=2))

    def forward(self, x):
        if x.dim() != 4:
            raise ValueError(f'SpikeRain expects images [B, C, H, W], got shape {tuple(x.shape)}')
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, 4)
        out = self.output_conv(self.refinement(self.temporal_fusion(self.features(self.encode(x))))) + x
        return out[..., :h, :w]
