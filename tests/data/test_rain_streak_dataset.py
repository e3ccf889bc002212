"""RainStreakDataset: streaks drawn on clean scikit-image crops, the same set in every validation, fresh streaks in
training, built through basicsr's registry."""
import math

import cv2
import numpy as np
import pytest
import torch
from basicsr.data import build_dataset

from conftest import photo_crops
from spikerir_plugin.data.rain_streak_dataset import line_kernel


@pytest.fixture(scope='module')
def clean_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp('clean')
    for i, crop in enumerate(photo_crops(64, 1)):
        cv2.imwrite(str(root / f'{i}.png'), crop[..., ::-1])
    return str(root)


def dataset(root, phase='val', **extra):
    opt = dict(name='rain', type='RainStreakDataset', dataroot_gt=root, io_backend={'type': 'disk'}, phase=phase,
               **extra)
    if phase == 'train':
        opt.update(gt_size=32, use_hflip=True, use_rot=True)
    return build_dataset(opt)


def test_validation_streaks_are_fixed_per_image_and_only_brighten(clean_dir):
    a, b = dataset(clean_dir), dataset(clean_dir)
    assert len(a) == 4
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert torch.equal(x['lq'], y['lq']) and torch.equal(x['gt'], y['gt'])
        assert x['lq'].shape == x['gt'].shape == (3, 64, 64)
        rain = x['lq'] - x['gt']
        assert rain.min() >= -1e-6 and x['lq'].max() <= 1 + 1e-6  # screen blend: brighter, never past 1
        assert 0.02 < float((rain > 0.02).float().mean()) < 0.8  # streaks, not an empty or a flat layer
    assert not torch.equal(a[0]['lq'] - a[0]['gt'], a[1]['lq'] - a[1]['gt'])
    other = dataset(clean_dir, rain_seed=1)
    assert not torch.equal(other[0]['lq'], a[0]['lq'])


def test_training_draws_fresh_streaks_on_random_crops(clean_dir):
    ds = dataset(clean_dir, 'train')
    torch.manual_seed(0)
    first = ds[0]
    second = ds[0]
    assert first['lq'].shape == (3, 32, 32)
    assert not torch.equal(first['lq'], second['lq'])
    torch.manual_seed(0)
    assert torch.equal(ds[0]['lq'], first['lq'])  # torch's RNG seeds each sample (exact resume)


def test_streaks_follow_the_angle():
    k = line_kernel(15, 0)
    assert math.isclose(float(k.sum()), 1, rel_tol=1e-6)
    assert k[:, k.shape[1] // 2].sum() > 0.9  # vertical: the centre column
    tilted = line_kernel(15, 45)
    ys, xs = np.nonzero(tilted > 0.02)
    assert np.corrcoef(xs, ys)[0, 1] > 0.9  # 45 degrees: along the diagonal


@pytest.mark.parametrize('bad', [{'density': [0.2, 0.1]}, {'length': [0, 5]}, {'intensity': 0.5},
                                 {'angle': [-100, 0]}])
def test_bad_ranges_are_refused(clean_dir, bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        dataset(clean_dir, **bad)


def test_rain_streak_keys_are_checked_at_launch(tmp_path):
    """A misspelt RainStreakDataset key is refused by the plugin's option schema, naming the key and the near one."""
    from spikerir_plugin.utils.options import OptionKeyError, check_option_keys
    opt = {'model_type': 'SpikingSRModel', 'network_g': {'type': 'SpikerIR', 'preset': 'tiny', 'T': 2},
           'train': {}, 'path': {},
           'datasets': {'train': {'type': 'RainStreakDataset', 'dataroot_gt': str(tmp_path), 'densty': [0.1, 0.2],
                                  'io_backend': {'type': 'disk'}}}}
    with pytest.raises(OptionKeyError, match=r'datasets\.train\.densty \(did you mean density\?\)'):
        check_option_keys(opt)
    opt['datasets']['train']['density'] = opt['datasets']['train'].pop('densty')
    check_option_keys(opt)
