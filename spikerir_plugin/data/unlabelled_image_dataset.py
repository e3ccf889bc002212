"""Degraded images without ground truth, for distillation: the teacher's output is their target.

For a user whose teacher was trained on a large set and who has degraded photos of their own but no clean versions
of them. Training only (validation needs ground truth); only SpikerIRDistillModel with a teacher trains on it (the
launch checks refuse it for a model without one).

Options (dataset section of a basicsr options file):
  dataroot_lq        folder of degraded images, or an LMDB (path ending in .lmdb) when io_backend.type is lmdb
  io_backend         {type: disk} or {type: lmdb}
  in_ch              3 (colour, default) or 1 (grayscale)
  gt_size            side of the random crop in ground-truth pixels (the crop of a degraded image is
                     gt_size / scale, as in basicsr's paired datasets)
  use_hflip, use_rot flips and rotations (basicsr's augment)
  labelled           optional: a dataset spec (any registered dataset that yields lq and gt, e.g.
                     {type: GaussianDenoiseDataset, dataroot_gt: ..., sigma: 25} or {type: PairedImageDataset,
                     dataroot_gt: ..., dataroot_lq: ..., io_backend: {type: disk}}) whose pairs are mixed in; it takes
                     phase, scale and gt_size from this dataset (it may not set another gt_size), and use_hflip /
                     use_rot unless it sets them
  labelled_repeat    how many times the labelled set appears per epoch (default 1): its share of the batches is
                     labelled_repeat * len(labelled) / len(this dataset)

Samples:
  without labelled: {'lq', 'lq_path'} (no gt, like basicsr's SingleImageDataset);
  with labelled:    {'lq', 'gt', 'has_gt', 'lq_path', 'gt_path'} for every sample, so basicsr's default collate
                    batches both kinds and every process of a DDP run sees the same keys. Indices below
                    labelled_repeat * len(labelled) are the labelled pairs (has_gt True); the others are the
                    unlabelled crops (has_gt False, gt_path '', gt a placeholder of gt's shape filled with NaN: a loss
                    that reads it without looking at has_gt turns NaN at once instead of training towards a
                    made-up image).
The crop and flips of an unlabelled sample come from a numpy generator seeded by one draw from torch's RNG, as in
GaussianDenoiseDataset (and for the same reasons: fresh draws every epoch with workers, exact resume without).
"""
import copy
import os

import numpy as np
import torch
from torch.utils import data

from basicsr.data.data_util import paths_from_folder, paths_from_lmdb
from basicsr.utils import FileClient, img2tensor
from basicsr.utils.registry import DATASET_REGISTRY

from .gaussian_denoise_dataset import _IMAGE_EXTENSIONS, decode_image, flip_rotate

# keys the labelled dataset takes from this one (a different crop size would break the collate of mixed batches)
_INHERITED = ('phase', 'scale', 'gt_size')
_AUGMENT = ('use_hflip', 'use_rot')


@DATASET_REGISTRY.register()
class UnlabelledImageDataset(data.Dataset):

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        name = opt.get('name')
        self.where = f'UnlabelledImageDataset {name!r}' if name else 'UnlabelledImageDataset'
        self.phase = opt.get('phase', 'train')
        if self.phase != 'train':
            raise ValueError(f'{self.where} is a training set (its images have no ground truth, which validation '
                             'and test measure against): use PairedImageDataset or GaussianDenoiseDataset there, or '
                             "basicsr's SingleImageDataset to restore images without scoring them")
        self.io_backend_opt = dict(opt.get('io_backend') or {'type': 'disk'})
        self.backend = self.io_backend_opt.pop('type', 'disk')
        if self.backend not in ('disk', 'lmdb'):
            raise ValueError(f"{self.where}: io_backend.type must be 'disk' or 'lmdb', got {self.backend!r}")
        self.lq_root = opt.get('dataroot_lq')
        if not self.lq_root:
            raise KeyError(f'{self.where} needs dataroot_lq (a folder of degraded images or a .lmdb)')
        self.scale = int(opt.get('scale', 1))
        self.gt_size = opt.get('gt_size')
        if not isinstance(self.gt_size, int) or self.gt_size < 1 or self.gt_size % self.scale:
            raise ValueError(f'{self.where} needs gt_size, the random crop side in ground-truth pixels (an integer '
                             f'>= 1 divisible by scale {self.scale}), got {self.gt_size!r}')
        self.in_ch = int(opt.get('in_ch', 3))
        if self.in_ch not in (1, 3):
            raise ValueError(f'{self.where}: in_ch must be 1 (grayscale) or 3 (colour), got {self.in_ch!r}')
        self.file_client = None
        self.paths = self._scan()
        self.labelled = self._build_labelled(opt.get('labelled'))
        self.repeat = opt.get('labelled_repeat', 1)
        if not isinstance(self.repeat, int) or isinstance(self.repeat, bool) or self.repeat < 1:
            raise ValueError(f'{self.where}: labelled_repeat must be an integer >= 1 (times the labelled set '
                             f'appears per epoch), got {self.repeat!r}')
        if self.labelled is None and 'labelled_repeat' in opt:
            raise ValueError(f'{self.where}: labelled_repeat is set but labelled is not')

    # ------------------------------------------------------------------ construction
    def _scan(self):
        option = 'dataroot_lq'
        if self.backend == 'lmdb':
            if not self.lq_root.endswith('.lmdb') or not os.path.isfile(os.path.join(self.lq_root, 'meta_info.txt')):
                raise FileNotFoundError(
                    f'{option} of {self.where}: {self.lq_root!r} is not an LMDB with meta_info.txt (a folder ending '
                    'in .lmdb): make it with spikerir-prepare folder-lmdb --src <folder of degraded images> --out '
                    '<name>.lmdb, or use io_backend: {type: disk} for a folder of images')
            self.io_backend_opt.update(db_paths=[self.lq_root], client_keys=['lq'])
            paths = paths_from_lmdb(self.lq_root)
        else:
            if not os.path.isdir(self.lq_root):
                raise FileNotFoundError(f'{option} of {self.where}: {self.lq_root!r} is not a folder (relative paths '
                                        f'are resolved against {os.getcwd()!r})')
            paths = sorted(p for p in paths_from_folder(self.lq_root) if p.lower().endswith(_IMAGE_EXTENSIONS))
        if not paths:
            raise FileNotFoundError(f'{option} of {self.where}: {self.lq_root!r} contains no images '
                                    f'({", ".join(_IMAGE_EXTENSIONS)})')
        return paths

    def _build_labelled(self, spec):
        """The labelled dataset of ``labelled`` (built from the registry: constructors that do not log), or None."""
        if spec is None:
            return None
        if not isinstance(spec, dict) or spec.get('type') not in DATASET_REGISTRY:
            known = ', '.join(sorted(k for k, _ in DATASET_REGISTRY))
            got = spec.get('type') if isinstance(spec, dict) else spec
            raise ValueError(f'{self.where}: labelled must be a dataset spec with a registered type (one of {known}), '
                             f'got {got!r}')
        if spec.get('type') == type(self).__name__:
            raise ValueError(f'{self.where}: labelled must yield ground truth; it cannot be an {spec["type"]}')
        for key in _INHERITED:
            if spec.get(key) is not None and spec[key] != self.opt.get(key, spec[key]):
                raise ValueError(f'{self.where}: labelled.{key} is {spec[key]!r} but the dataset\'s {key} is '
                                 f'{self.opt.get(key)!r}: mixed batches need one {key}; remove labelled.{key}')
        check_labelled_keys(spec, self.where)
        channels = labelled_channels(spec)
        if channels is not None and channels != self.in_ch:
            raise ValueError(f'{self.where}: the labelled {spec["type"]} gives {channels}-channel images but in_ch is '
                             f'{self.in_ch}: make them agree (in_ch, labelled.in_ch or labelled.color)')
        spec = copy.deepcopy(spec)  # basicsr's datasets write into their io_backend options
        spec.setdefault('name', f'{self.opt.get("name")}.labelled')
        spec.setdefault('io_backend', {'type': 'disk'})
        for key in _INHERITED:
            spec[key] = self.opt.get(key, 1 if key == 'scale' else spec.get(key))
        spec['phase'] = self.phase
        for key in _AUGMENT:
            spec.setdefault(key, self.opt.get(key, False))
        return DATASET_REGISTRY.get(spec['type'])(spec)

    def __getstate__(self):
        # an opened LMDB environment cannot be pickled (DataLoader spawn workers); each process reopens lazily
        state = self.__dict__.copy()
        state['file_client'] = None
        return state

    # ------------------------------------------------------------------ samples
    @property
    def num_labelled(self):
        return 0 if self.labelled is None else self.repeat * len(self.labelled)

    def __len__(self):
        return self.num_labelled + len(self.paths)

    def _read(self, path):
        if self.file_client is None:
            self.file_client = FileClient(self.backend, **self.io_backend_opt)
        content = self.file_client.get(path, 'lq')
        if content is None:
            raise KeyError(f'image {path!r} not found in dataroot_lq {self.lq_root!r}')
        return decode_image(content, self.in_ch)

    def _crop_and_flip(self, img, path, rng):
        size = self.gt_size // self.scale
        h, w = img.shape[:2]
        if h < size or w < size:
            raise ValueError(f'{self.where}: image {path!r} is {w}x{h}, smaller than the crop {size} (gt_size '
                             f'{self.gt_size} / scale {self.scale})')
        y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        return flip_rotate(img[y:y + size, x:x + size], rng, self.opt.get('use_hflip', False),
                           self.opt.get('use_rot', False))

    def __getitem__(self, index):
        if index < self.num_labelled:
            sample = self.labelled[index % len(self.labelled)]
            if 'gt' not in sample:
                raise KeyError(f'{self.where}: the labelled {type(self.labelled).__name__} yields no gt')
            return {'lq': sample['lq'], 'gt': sample['gt'], 'has_gt': torch.tensor(True),
                    'lq_path': sample.get('lq_path', ''), 'gt_path': sample.get('gt_path', '')}
        path = self.paths[index - self.num_labelled]
        rng = np.random.default_rng(int(torch.randint(0, 2 ** 62, ())))  # see the module docstring
        lq = img2tensor(self._crop_and_flip(self._read(path), path, rng), bgr2rgb=True, float32=True)
        if self.labelled is None:
            return {'lq': lq, 'lq_path': path}
        gt = torch.full((lq.shape[0], self.gt_size, self.gt_size), float('nan'))
        return {'lq': lq, 'gt': gt, 'has_gt': torch.tensor(False), 'lq_path': path, 'gt_path': ''}


def labelled_channels(spec):
    """Channels of the images a labelled dataset spec yields, or None when its type is not known here."""
    if spec.get('type') == 'GaussianDenoiseDataset':
        return int(spec.get('in_ch', 3))
    if spec.get('type') == 'PairedImageDataset':
        return 1 if spec.get('color') == 'y' else 3
    return None


def check_labelled_keys(spec, where):
    """Unknown keys of a labelled spec of one of the plugin's datasets (basicsr would ignore them)."""
    from spikerir_plugin.utils.options import BASICSR_DATASET_KEYS, PLUGIN_DATASET_KEYS, unknown_keys
    if spec.get('type') in PLUGIN_DATASET_KEYS:
        problems = unknown_keys('labelled', spec, list(BASICSR_DATASET_KEYS) + list(PLUGIN_DATASET_KEYS[spec['type']]))
        if problems:
            raise ValueError(f'{where}: unknown key{"s" if len(problems) > 1 else ""} {"; ".join(problems)}')
