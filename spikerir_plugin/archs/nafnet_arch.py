"""NAFNet (Chen et al., ECCV 2022): constructor and parameter names of megvii-research/NAFNet's NAFNet_arch.py,
so official checkpoints load strictly. Decoder features: `decoders.0` .. `decoders.3`, coarse to fine.
"""
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from spikerir_plugin.archs.arch_util import pad_to_multiple

# Official configurations (parameter counts: sidd-width32 29,159,715; gopro-width64 67,888,835).
PRESETS = {
    'sidd-width32': dict(width=32, middle_blk_num=12, enc_blk_nums=[2, 2, 4, 8], dec_blk_nums=[2, 2, 2, 2]),
    'gopro-width64': dict(width=64, middle_blk_num=1, enc_blk_nums=[1, 1, 1, 28], dec_blk_nums=[1, 1, 1, 1]),
}
CLASS_DEFAULTS = dict(width=16, middle_blk_num=1, enc_blk_nums=[], dec_blk_nums=[])


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of [B, C, H, W] (autograd replaces the official hand-written backward)."""

    def __init__(self, channels, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x):
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        return (x - mu) / (var + self.eps).sqrt() * self.weight[:, None, None] + self.bias[:, None, None]


class SimpleGate(nn.Module):
    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        return a * b


class NAFBlock(nn.Module):
    def __init__(self, c, dw_expand=2, ffn_expand=2):
        super().__init__()
        dw = c * dw_expand
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.conv3 = nn.Conv2d(dw // 2, c, 1)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1))  # simplified channel attn
        self.sg = SimpleGate()
        self.conv4 = nn.Conv2d(c, ffn_expand * c, 1)
        self.conv5 = nn.Conv2d(ffn_expand * c // 2, c, 1)
        self.norm1 = LayerNorm2d(c)
        self.norm2 = LayerNorm2d(c)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, inp):
        x = self.sg(self.conv2(self.conv1(self.norm1(inp))))
        y = inp + self.conv3(x * self.sca(x)) * self.beta
        x = self.conv5(self.sg(self.conv4(self.norm2(y))))
        return y + x * self.gamma


@ARCH_REGISTRY.register()
class NAFNet(nn.Module):
    """Official arguments; `preset` ('sidd-width32' | 'gopro-width64') fills the ones not given explicitly,
    otherwise the official class defaults apply. Input is zero-padded to a multiple of 2**levels, cropped back."""

    def __init__(self, img_channel=3, width=None, middle_blk_num=None, enc_blk_nums=None, dec_blk_nums=None,
                 preset=None):
        super().__init__()
        if preset is not None and preset not in PRESETS:
            raise ValueError(f'NAFNet preset {preset!r} is unknown; valid presets: {sorted(PRESETS)} or None')
        cfg = dict(CLASS_DEFAULTS, **(PRESETS[preset] if preset else {}))
        cfg.update({k: v for k, v in dict(width=width, middle_blk_num=middle_blk_num, enc_blk_nums=enc_blk_nums,
                                           dec_blk_nums=dec_blk_nums).items() if v is not None})
        if len(cfg['enc_blk_nums']) != len(cfg['dec_blk_nums']):
            raise ValueError(f'enc_blk_nums {cfg["enc_blk_nums"]} and dec_blk_nums {cfg["dec_blk_nums"]} '
                             f'must have the same length (one entry per level)')

        chan = cfg['width']
        self.intro = nn.Conv2d(img_channel, chan, 3, padding=1)
        self.ending = nn.Conv2d(chan, img_channel, 3, padding=1)
        # same registration order as the official module, so state_dict key order matches too
        self.encoders, self.decoders, self.middle_blks, self.ups, self.downs = (nn.ModuleList() for _ in range(5))
        for num in cfg['enc_blk_nums']:
            self.encoders.append(nn.Sequential(*[NAFBlock(chan) for _ in range(num)]))
            self.downs.append(nn.Conv2d(chan, 2 * chan, 2, 2))
            chan *= 2
        self.middle_blks = nn.Sequential(*[NAFBlock(chan) for _ in range(cfg['middle_blk_num'])])
        for num in cfg['dec_blk_nums']:
            self.ups.append(nn.Sequential(nn.Conv2d(chan, chan * 2, 1, bias=False), nn.PixelShuffle(2)))
            chan //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(chan) for _ in range(num)]))
        self.padder_size = 2 ** len(self.encoders)

    def hint_layers(self):
        """Decoder levels offered as distillation hints, coarse to fine (the depth is a constructor argument)."""
        return [f'decoders.{i}' for i in range(len(self.decoders))]

    def forward(self, inp):
        h, w = inp.shape[-2:]
        inp = pad_to_multiple(inp, self.padder_size, mode='constant')
        x = self.intro(inp)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.middle_blks(x)
        for decoder, up, skip in zip(self.decoders, self.ups, skips[::-1]):
            x = decoder(up(x) + skip)
        return (self.ending(x) + inp)[..., :h, :w]
