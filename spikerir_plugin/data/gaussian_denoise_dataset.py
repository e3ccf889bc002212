"""Gaussian denoising from clean images only: additive white Gaussian noise is drawn on the fly.

Options (dataset section of a basicsr options file):
  dataroot_gt        folder of clean images, or an LMDB (path ending in .lmdb) when io_backend.type is lmdb
  io_backend         {type: disk} or {type: lmdb}
  sigma              fixed noise std in 0-255 units, or
  sigma_range        [lo, hi]: std drawn uniformly per sample (exactly one of sigma / sigma_range)
  in_ch              3 (colour, default) or 1 (grayscale)
  clip               clip the noisy input to [0, 1] (default false: the noise distribution stays Gaussian)
  train only:        gt_size (random crop), use_hflip, use_rot
  val/test only:     noise_seed (default 0), crop_to_multiple (centre-free top-left crop to a multiple of N)

In validation/test (phase != 'train') the noise of image i depends only on (noise_seed, i), so every epoch and
every process sees the same noisy set. In training the crop, flips and noise of each sample come from a numpy
generator seeded by one draw from torch's RNG. Not numpy's or Python's global RNG: basicsr's worker_init_fn seeds
those with the same value in every epoch (workers restart each epoch unless persistent_workers is set), which would
replay the same noise fields, crops and flips epoch after epoch. torch seeds each worker afresh per epoch, and in
the main process (num_worker_per_gpu: 0) its state is part of the training state, so a resumed run continues
exactly.
Returns {'lq', 'gt', 'lq_path', 'gt_path'} with RGB (or 1-channel) CHW float32 tensors, like PairedImageDataset.
"""
import os

import numpy as np
import torch
from torch.utils import data

from basicsr.data.data_util import paths_from_folder, paths_from_lmdb
from basicsr.utils import FileClient, imfrombytes, img2tensor
from basicsr.utils.registry import DATASET_REGISTRY

_IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')


def decode_image(content, in_ch):
    """HWC float32 BGR (or HW1 grey for in_ch 1) of an image file's bytes, as basicsr's imfrombytes reads them."""
    img = imfrombytes(content, flag='grayscale' if in_ch == 1 else 'color', float32=True)
    return img[..., None] if img.ndim == 2 else img


def flip_rotate(img, rng, use_hflip, use_rot):
    """basicsr's augment (hflip; with use_rot vflip and a transpose, each with probability 1/2), drawn from rng."""
    hflip, vflip, transpose = rng.random(3) < 0.5
    if use_hflip and hflip:
        img = img[:, ::-1]
    if use_rot:
        if vflip:
            img = img[::-1]
        if transpose:
            img = img.transpose(1, 0, 2)
    return np.ascontiguousarray(img)


@DATASET_REGISTRY.register()
class GaussianDenoiseDataset(data.Dataset):

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.phase = opt.get('phase', 'train')
        self.io_backend_opt = dict(opt.get('io_backend') or {'type': 'disk'})
        self.backend = self.io_backend_opt.pop('type', 'disk')
        if self.backend not in ('disk', 'lmdb'):
            raise ValueError(f"GaussianDenoiseDataset: io_backend.type must be 'disk' or 'lmdb', got {self.backend!r}")
        self.gt_root = opt.get('dataroot_gt')
        if not self.gt_root:
            raise KeyError('GaussianDenoiseDataset needs dataroot_gt (a folder of clean images or a .lmdb)')
        self.file_client = None
        self.paths = self._scan()

        self.sigma, self.sigma_range = opt.get('sigma'), opt.get('sigma_range')
        if (self.sigma is None) == (self.sigma_range is None):
            raise ValueError('GaussianDenoiseDataset needs exactly one of sigma (e.g. 25) or sigma_range '
                             f'(e.g. [0, 50]); got sigma={self.sigma!r}, sigma_range={self.sigma_range!r}')
        if self.sigma_range is not None:
            if len(self.sigma_range) != 2 or not 0 <= self.sigma_range[0] <= self.sigma_range[1]:
                raise ValueError(f'sigma_range must be [lo, hi] with 0 <= lo <= hi, got {self.sigma_range!r}')
        elif self.sigma < 0:
            raise ValueError(f'sigma must be >= 0, got {self.sigma!r}')

        self.in_ch = int(opt.get('in_ch', 3))
        if self.in_ch not in (1, 3):
            raise ValueError(f'in_ch must be 1 (grayscale) or 3 (colour), got {self.in_ch!r}')
        self.clip = bool(opt.get('clip', False))
        self.noise_seed = int(opt.get('noise_seed', 0))
        self.crop_to_multiple = opt.get('crop_to_multiple')
        if self.phase == 'train' and not opt.get('gt_size'):
            raise KeyError('GaussianDenoiseDataset in phase train needs gt_size (random crop size)')

    def _scan(self):
        if self.backend == 'lmdb':
            if not self.gt_root.endswith('.lmdb') or not os.path.isfile(os.path.join(self.gt_root, 'meta_info.txt')):
                missing = ('does not exist' if not os.path.isdir(self.gt_root) else
                           'does not end in .lmdb' if not self.gt_root.endswith('.lmdb') else 'has no meta_info.txt')
                raise FileNotFoundError(
                    f'dataroot_gt of dataset {self.opt.get("name")!r}: {self.gt_root!r} is not an LMDB made by '
                    f'spikerir-prepare (it {missing}; it must be a folder ending in .lmdb with meta_info.txt): make '
                    f'it with spikerir-prepare folder-lmdb --src <folder of clean images> --out <name>.lmdb, or use '
                    'io_backend: {type: disk} for a folder of images')
            self.io_backend_opt.update(db_paths=[self.gt_root], client_keys=['gt'])
            paths = paths_from_lmdb(self.gt_root)
        else:
            if not os.path.isdir(self.gt_root):
                raise FileNotFoundError(f'dataroot_gt {self.gt_root!r} is not a folder')
            paths = sorted(p for p in paths_from_folder(self.gt_root) if p.lower().endswith(_IMAGE_EXTENSIONS))
        if not paths:
            raise FileNotFoundError(f'dataroot_gt {self.gt_root!r} contains no images')
        return paths

    def __getstate__(self):
        # an opened LMDB environment cannot be pickled (DataLoader spawn workers); each process reopens lazily
        state = self.__dict__.copy()
        state['file_client'] = None
        return state

    def __len__(self):
        return len(self.paths)

    def _read(self, path):
        if self.file_client is None:
            self.file_client = FileClient(self.backend, **self.io_backend_opt)
        content = self.file_client.get(path, 'gt')
        if content is None:
            raise KeyError(f'image {path!r} not found in {self.gt_root!r}')
        return decode_image(content, self.in_ch)

    def _random_crop(self, img, path, rng):
        size = self.opt['gt_size']
        h, w = img.shape[:2]
        if h < size or w < size:
            raise ValueError(f'image {path!r} is {w}x{h}, smaller than gt_size {size}')
        y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        return img[y:y + size, x:x + size]

    def _flip_rotate(self, img, rng):
        return flip_rotate(img, rng, self.opt.get('use_hflip', False), self.opt.get('use_rot', False))

    def __getitem__(self, index):
        path = self.paths[index]
        gt = self._read(path)
        if self.phase == 'train':
            rng = np.random.default_rng(int(torch.randint(0, 2 ** 62, ())))  # see the module docstring
            gt = self._flip_rotate(self._random_crop(gt, path, rng), rng)
        else:
            if self.crop_to_multiple:
                m = int(self.crop_to_multiple)
                gt = gt[:gt.shape[0] // m * m, :gt.shape[1] // m * m]
            rng = np.random.default_rng([self.noise_seed, index])
        if self.sigma_range is not None:
            sigma = rng.uniform(self.sigma_range[0], self.sigma_range[1])
        else:
            sigma = self.sigma
        noise = rng.standard_normal(gt.shape).astype(np.float32) * np.float32(sigma / 255.)
        lq = gt + noise
        if self.clip:
            lq = np.clip(lq, 0, 1)
        gt, lq = img2tensor([gt, lq], bgr2rgb=True, float32=True)
        return {'lq': lq, 'gt': gt, 'lq_path': path, 'gt_path': path}
