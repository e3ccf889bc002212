"""Synthetic deraining from clean images only: rain streaks are drawn on the fly on each clean crop.

A streak layer is a field of random seed points smeared along one direction (a line kernel of the streak length
at the image's angle), lightly blurred across its width, scaled to the image's intensity and laid over the clean
image with a screen blend, lq = 1 - (1 - gt) * (1 - rain): bright streaks that never push a pixel past 1 and
leave the rest of the photo as it was.

Options (dataset section of a basicsr options file):
  dataroot_gt        folder of clean images, or an LMDB (path ending in .lmdb) when io_backend.type is lmdb
  io_backend         {type: disk} or {type: lmdb}
  density            [lo, hi] share of pixels that seed a streak, drawn per image (default [0.004, 0.012])
  length             [lo, hi] streak length in pixels (default [8, 24])
  angle              [lo, hi] streak angle in degrees from vertical, one per image (default [-30, 30])
  intensity          [lo, hi] peak brightness of the streaks in [0, 1] (default [0.5, 0.9])
  in_ch              3 (colour, default) or 1 (grayscale); the streaks are grey (the same on every channel)
  train only:        gt_size (random crop), use_hflip, use_rot
  val/test only:     rain_seed (default 0), crop_to_multiple (top-left crop to a multiple of N)

Random streams as GaussianDenoiseDataset (whose reading, cropping and flips this reuses): in validation/test the
streaks of image i depend only on (rain_seed, i), so every epoch and process sees the same rainy set; in training
each sample's crop, flips and streaks come from a numpy generator seeded by one draw from torch's RNG.
Returns {'lq', 'gt', 'lq_path', 'gt_path'} with RGB (or 1-channel) CHW float32 tensors, like PairedImageDataset.
"""
import math

import cv2
import numpy as np
import torch

from basicsr.utils import img2tensor
from basicsr.utils.registry import DATASET_REGISTRY

from .gaussian_denoise_dataset import GaussianDenoiseDataset

DEFAULTS = {'density': (0.004, 0.012), 'length': (8, 24), 'angle': (-30, 30), 'intensity': (0.5, 0.9)}
BOUNDS = {'density': (0, 1), 'length': (1, None), 'angle': (-90, 90), 'intensity': (0, 1)}


def _range(opt, key):
    value = opt.get(key, DEFAULTS[key])
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f'RainStreakDataset: {key} must be [lo, hi], got {value!r}') from None
    low, high = BOUNDS[key]
    if not (lo <= hi and lo >= low and (high is None or hi <= high)):
        raise ValueError(f'RainStreakDataset: {key} must be [lo, hi] with {low} <= lo <= hi'
                         + (f' <= {high}' if high is not None else '') + f', got {value!r}')
    return lo, hi


def line_kernel(length, angle_deg):
    """A normalised anti-aliased line of ``length`` pixels through the kernel's centre, ``angle_deg`` from
    vertical."""
    size = int(math.ceil(length)) | 1  # odd, so the line is centred
    k = np.zeros((size, size), np.float32)
    c, half = size // 2, (length - 1) / 2
    dx, dy = math.sin(math.radians(angle_deg)) * half, math.cos(math.radians(angle_deg)) * half
    shift = 4  # sub-pixel end points (cv2 fixed point)
    p0 = (int(round((c - dx) * 2 ** shift)), int(round((c - dy) * 2 ** shift)))
    p1 = (int(round((c + dx) * 2 ** shift)), int(round((c + dy) * 2 ** shift)))
    cv2.line(k, p0, p1, 1.0, 1, cv2.LINE_AA, shift)
    return k / max(float(k.sum()), 1e-8)


def rain_layer(shape, rng, density, length, angle, intensity):
    """An (h, w) streak layer in [0, 1], every parameter drawn from its [lo, hi] range by ``rng``."""
    h, w = shape
    d, n, a, peak = (rng.uniform(*r) for r in (density, length, angle, intensity))
    seeds = (rng.random((h, w)) < d).astype(np.float32) * rng.uniform(0.6, 1.0, (h, w)).astype(np.float32)
    streaks = cv2.filter2D(seeds, -1, line_kernel(n, a), borderType=cv2.BORDER_REFLECT)
    streaks = cv2.GaussianBlur(streaks, (3, 3), 0.6)  # soft edges across the streak
    top = float(streaks.max())
    return np.clip(streaks * (peak / top), 0, 1) if top > 0 else streaks


@DATASET_REGISTRY.register()
class RainStreakDataset(GaussianDenoiseDataset):

    def __init__(self, opt):
        # the clean-image reading, crops and flips are the Gaussian set's; its noise is off (sigma 0)
        super().__init__(dict(opt, sigma=0, sigma_range=None))
        self.ranges = {key: _range(opt, key) for key in DEFAULTS}
        self.rain_seed = int(opt.get('rain_seed', 0))

    def __getitem__(self, index):
        path = self.paths[index]
        gt = self._read(path)
        if self.phase == 'train':
            rng = np.random.default_rng(int(torch.randint(0, 2 ** 62, ())))
            gt = self._flip_rotate(self._random_crop(gt, path, rng), rng)
        else:
            if self.crop_to_multiple:
                m = int(self.crop_to_multiple)
                gt = gt[:gt.shape[0] // m * m, :gt.shape[1] // m * m]
            rng = np.random.default_rng([self.rain_seed, index])
        rain = rain_layer(gt.shape[:2], rng, **self.ranges)[..., None]
        lq = 1 - (1 - gt) * (1 - rain)
        gt, lq = img2tensor([np.ascontiguousarray(gt), lq.astype(np.float32)], bgr2rgb=True, float32=True)
        return {'lq': lq, 'gt': gt, 'lq_path': path, 'gt_path': path}
