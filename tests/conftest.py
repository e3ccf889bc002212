"""Shared fixtures: tiny restoration sets made from the real photos bundled with scikit-image."""
import logging
import os
import sys

import cv2
import numpy as np
import pytest
import torch

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
# reference implementations the tests compare against (tests/reference/, not a test folder)
REFERENCE_DIR = os.path.join(TESTS_DIR, 'reference')
# the tests live in subfolders that mirror the package; the shared helpers next to this file (doc_blocks.py) import
# from every one of them
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)
PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket')


def photo_crops(size=48, per_photo=2):
    """RGB uint8 crops of skimage's bundled photos (deterministic)."""
    import skimage.data
    crops = []
    for name in PHOTOS:
        img = getattr(skimage.data, name)()
        h, w = img.shape[:2]
        for k in range(per_photo):
            y, x = (h - size) * (k + 1) // (per_photo + 1), (w - size) * (k + 1) // (per_photo + 2)
            crops.append(np.ascontiguousarray(img[y:y + size, x:x + size]))
    return crops


def write_noisy_pairs(root, crops, sigma=25, seed=0):
    """Write <root>/{input,target}/<i>.png (BGR PNG, as basicsr reads them); returns the two folders."""
    rng = np.random.default_rng(seed)
    lq_dir, gt_dir = os.path.join(root, 'input'), os.path.join(root, 'target')
    os.makedirs(lq_dir, exist_ok=True)
    os.makedirs(gt_dir, exist_ok=True)
    for i, gt in enumerate(crops):
        noisy = np.clip(gt.astype(np.float64) + rng.normal(0, sigma, gt.shape), 0, 255).round().astype(np.uint8)
        cv2.imwrite(os.path.join(gt_dir, f'{i:03d}.png'), gt[..., ::-1])
        cv2.imwrite(os.path.join(lq_dir, f'{i:03d}.png'), noisy[..., ::-1])
    return lq_dir, gt_dir


@pytest.fixture(scope='session')
def tiny_pairs(tmp_path_factory):
    """A paired noisy/clean folder set: 8 train pairs of 48x48, 2 val pairs of 32x32."""
    root = tmp_path_factory.mktemp('tiny_pairs')
    train = write_noisy_pairs(str(root / 'train'), photo_crops(48, 2), seed=0)
    val = write_noisy_pairs(str(root / 'val'), photo_crops(32, 1)[:2], seed=1)
    return {'train_lq': train[0], 'train_gt': train[1], 'val_lq': val[0], 'val_gt': val[1]}


def subprocess_env(**extra):
    """Environment for child processes: the repo importable, few threads (2-core CI)."""
    env = dict(os.environ)
    env['PYTHONPATH'] = REPO_ROOT + os.pathsep + env.get('PYTHONPATH', '')
    env.setdefault('OMP_NUM_THREADS', '1')
    env.update(extra)
    return env


PYTHON = sys.executable


class LogLines(logging.Handler):
    """Collects the messages of a logger (basicsr writes its log file only for the first pipeline of a process)."""

    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def one_thread():
    """One torch thread for a module of tiny tensors (`pytestmark = pytest.mark.usefixtures('one_thread')`): a
    second thread only adds start-up cost, and oversubscribes a busy 2-core CI box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
