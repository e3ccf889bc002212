"""NAFNetLocal: NAFNet with test-time local statistics, as the official GoPro model is evaluated.

NAFNet's simplified channel attention averages each feature map over the whole image. Trained on crops of
``train_size``, every such average covered one crop; on a much larger test image (a 1280x720 GoPro frame) it covers
far more. The test-time local converter of megvii-research/NAFNet (``NAFNetLocal``; Chu et al., "Improving Image
Restoration by Revisiting Global Information Aggregation", ECCV 2022, arXiv 2112.04491) keeps the statistics at
training scale: at every level the global average becomes a sliding average over a window of
``base_size / train_size`` times the feature map that a ``train_size`` crop gives at that level (``base_size``
defaults to 1.5 x ``train_size``, the official choice), replicate-padded back to the feature size. Where the window
covers the whole feature map the pool stays global, so for inputs up to ``base_size`` NAFNetLocal equals NAFNet
exactly.

The pools have no parameters: the state dict is NAFNet's, key for key, and the same checkpoints load strictly.
"""
import math

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from spikerir_plugin.archs.nafnet_arch import NAFNet

# fast_imp subsamples the feature map by the largest of these strides that divides it (capped per level).
_FAST_STRIDES = (5, 4, 3, 2, 1)


def _pair(value, name):
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) in (2, 4) and all(isinstance(v, int) for v in value):
        return tuple(value[-2:])
    raise ValueError(f'NAFNetLocal {name} must be an int, [H, W] or [N, C, H, W], got {value!r}')


class LocalAvgPool2d(nn.Module):
    """Average over a kernel_size window around each position (1x1 output when the window covers the map).

    Exact mode: every full window (stride 1) from an integral image, replicate-padded to the input size.
    fast_imp: the official faster approximation: the integral image of the map subsampled by a stride r <= max_stride
    (the largest of 5, 4, 3, 2, 1 that divides the side), windows of kernel // r samples, nearest upsampling by r."""

    def __init__(self, kernel_size, fast_imp=False, max_stride=(1, 1)):
        super().__init__()
        self.kernel_size, self.fast_imp, self.max_stride = tuple(kernel_size), fast_imp, tuple(max_stride)

    def extra_repr(self):
        return f'kernel_size={self.kernel_size}, fast_imp={self.fast_imp}'

    def forward(self, x):
        h, w = x.shape[-2:]
        kh, kw = self.kernel_size
        if kh >= h and kw >= w:
            return F.adaptive_avg_pool2d(x, 1)
        # cumulative sums in fp32 at least: bf16/fp16 sums over a whole feature map lose every digit of a window
        acc = x if x.dtype == torch.float64 else x.float()
        out = self._fast(acc, h, w, kh, kw) if self.fast_imp else None
        if out is None:
            kh, kw = min(kh, h), min(kw, w)
            s = F.pad(acc.cumsum(-2).cumsum(-1), (1, 0, 1, 0))
            out = (s[..., kh:, kw:] - s[..., :-kh, kw:] - s[..., kh:, :-kw] + s[..., :-kh, :-kw]) / (kh * kw)
        dh, dw = h - out.shape[-2], w - out.shape[-1]
        out = F.pad(out, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), mode='replicate')
        return out.to(x.dtype)

    def _fast(self, x, h, w, kh, kw):
        rh = min(next(r for r in _FAST_STRIDES if h % r == 0), self.max_stride[0])
        rw = min(next(r for r in _FAST_STRIDES if w % r == 0), self.max_stride[1])
        s = x[..., ::rh, ::rw].cumsum(-2).cumsum(-1)
        sh, sw = s.shape[-2:]
        if sh < 2 or sw < 2:  # a single sampled row or column has no window difference: use the exact mode
            return None
        k1, k2 = max(1, min(sh - 1, kh // rh)), max(1, min(sw - 1, kw // rw))
        out = (s[..., k1:, k2:] - s[..., :-k1, k2:] - s[..., k1:, :-k2] + s[..., :-k1, :-k2]) / (k1 * k2)
        return F.interpolate(out, scale_factor=(rh, rw), mode='nearest') if (rh, rw) != (1, 1) else out


@ARCH_REGISTRY.register()
class NAFNetLocal(NAFNet):
    """NAFNet's arguments plus train_size (int, [H, W] or [N, C, H, W]; default 256, the official GoPro crops),
    base_size (window at the input resolution; default 1.5 x train_size) and fast_imp (the official faster,
    approximate pooling). Windows per level: the feature side a train_size crop has there (after padding to the
    downsampling factor) x base_size / train_size, rounded down."""

    def __init__(self, *args, train_size=256, base_size=None, fast_imp=False, **kwargs):
        super().__init__(*args, **kwargs)
        th, tw = _pair(train_size, 'train_size')
        bh, bw = _pair(base_size, 'base_size') if base_size is not None else (int(th * 1.5), int(tw * 1.5))
        if min(th, tw, bh, bw) <= 0:
            raise ValueError(f'NAFNetLocal train_size {train_size!r} and base_size {base_size!r} must be positive')
        self.train_size, self.base_size, self.fast_imp = (th, tw), (bh, bw), bool(fast_imp)
        # the feature side at level l of a train_size crop, padded like forward() pads it
        ph, pw = (math.ceil(v / self.padder_size) * self.padder_size for v in (th, tw))
        depth = len(self.encoders)
        levels = [(blocks, i) for i, blocks in enumerate(self.encoders)] + [(self.middle_blks, depth)]
        levels += [(blocks, depth - 1 - i) for i, blocks in enumerate(self.decoders)]
        for blocks, level in levels:
            fh, fw = ph >> level, pw >> level
            for block in blocks:
                block.sca[0] = LocalAvgPool2d((fh * bh // th, fw * bw // tw), self.fast_imp,
                                              (max(1, 5 * fh // th), max(1, 5 * fw // tw)))
