"""The spiking archs under BasicSR's own SRModel: train >= 3 iterations, validate and test through basicsr's own
train_pipeline / test_pipeline, as a user who only swaps `network_g` would."""
import glob
import logging
import sys

import pytest
import torch
import yaml

import spikerir_plugin  # noqa: F401
from conftest import LogLines

SPIKING_ARCHS = {
    'SpikerIR': {'type': 'SpikerIR', 'preset': 'tiny', 'T': 2, 'reduction_t': 2},
    'ESDNet': {'type': 'ESDNet', 'dim': 8, 'en_num_blocks': [1, 1, 1, 1], 'de_num_blocks': [1, 1, 1, 1], 'T': 4,
               'reduction_c': 4},
    'SPIDEN': {'type': 'SPIDEN', 'width': 8, 'depth': 4, 'T': 2},
}


def _pipeline(monkeypatch, root, yml, which):
    """Run basicsr's own pipeline in this process; returns the messages it logged (basicsr's log file exists only
    for the first pipeline of a process: its logger is initialised once)."""
    from basicsr.test import test_pipeline
    from basicsr.train import train_pipeline
    monkeypatch.setattr(sys, 'argv', [f'{which}.py', '-opt', yml])
    logger = logging.getLogger('basicsr')
    level, handler = logger.level, LogLines()
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        (train_pipeline if which == 'train' else test_pipeline)(str(root))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return '\n'.join(handler.lines)


@pytest.mark.parametrize('arch', SPIKING_ARCHS)
def test_srmodel_trains_validates_and_tests_a_spiking_arch(tmp_path, monkeypatch, tiny_pairs, arch):
    name = f'srmodel_{arch}'
    data = {'type': 'PairedImageDataset', 'dataroot_gt': tiny_pairs['val_gt'], 'dataroot_lq': tiny_pairs['val_lq'],
            'io_backend': {'type': 'disk'}}
    metrics = {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}}
    train = {'name': name, 'model_type': 'SRModel', 'scale': 1, 'num_gpu': 0, 'manual_seed': 3,
             'datasets': {'train': {'name': 'train', 'type': 'PairedImageDataset',
                                    'dataroot_gt': tiny_pairs['train_gt'], 'dataroot_lq': tiny_pairs['train_lq'],
                                    'filename_tmpl': '{}', 'io_backend': {'type': 'disk'}, 'gt_size': 32,
                                    'use_hflip': True, 'use_rot': True, 'num_worker_per_gpu': 0,
                                    'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 1, 'prefetch_mode': None},
                          'val': dict(data, name='val')},
             'network_g': SPIKING_ARCHS[arch],
             'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
             'train': {'ema_decay': 0.5, 'optim_g': {'type': 'Adam', 'lr': 1e-3},
                       'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5},
                       'total_iter': 3, 'warmup_iter': -1, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}},
             'val': {'val_freq': 3, 'save_img': False, 'metrics': metrics},
             'logger': {'print_freq': 1, 'save_checkpoint_freq': 3, 'use_tb_logger': False}}
    yml = tmp_path / 'train.yml'
    yml.write_text(yaml.safe_dump(train))
    log = _pipeline(monkeypatch, tmp_path, str(yml), 'train')
    exp = tmp_path / 'experiments' / name
    assert 'End of training' in log and (exp / 'models' / 'net_g_3.pth').is_file()
    assert log.count('# psnr:') >= 2  # validated at iteration 3 and after the last save
    ckpt = torch.load(exp / 'models' / 'net_g_latest.pth', weights_only=True)
    assert set(ckpt) == {'params', 'params_ema'}

    test = {'name': f'{name}_test', 'model_type': 'SRModel', 'scale': 1, 'num_gpu': 0,
            'datasets': {'test_1': dict(data, name='val')}, 'network_g': SPIKING_ARCHS[arch],
            'path': {'pretrain_network_g': str(exp / 'models' / 'net_g_latest.pth'), 'param_key_g': 'params_ema',
                     'strict_load_g': True},
            'val': {'save_img': True, 'suffix': None, 'metrics': metrics}}
    yml = tmp_path / 'test.yml'
    yml.write_text(yaml.safe_dump(test))
    for _ in range(2):  # twice: a stateless network gives the same images and PSNR again
        _pipeline(monkeypatch, tmp_path, str(yml), 'test')
        results = tmp_path / 'results' / f'{name}_test'
        images = sorted(glob.glob(str(results / 'visualization' / 'val' / '*.png')))
        assert len(images) == 2
        contents = [open(p, 'rb').read() for p in images]
        if _ == 0:
            first = contents
    assert contents == first


class _Pairs(torch.utils.data.Dataset):
    opt = {'name': 'pairs'}

    def __len__(self):
        return 3

    def __getitem__(self, index):
        gt = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(index))
        lq = (gt + 0.1 * torch.randn(3, 24, 24, generator=torch.Generator().manual_seed(10 + index))).clamp(0, 1)
        return {'lq': lq, 'gt': gt, 'lq_path': f'photo{index}.png'}


@pytest.mark.parametrize('is_train', [True, False])
def test_spiking_sr_model_validates_as_srmodel_does(tmp_path, is_train):
    """SpikingSRModel's own validation loop (atomic image writes) gives SRModel's metrics, best-metric records and
    image files, in training (per image and iteration) and in testing (per dataset, with val.suffix)."""
    from basicsr.models import build_model
    runs = {}
    for model_type in ('SRModel', 'SpikingSRModel'):
        root = tmp_path / model_type
        opt = {'name': 'same', 'model_type': model_type, 'num_gpu': 0, 'is_train': is_train, 'dist': False,
               'rank': 0, 'world_size': 1, 'scale': 1, 'network_g': dict(SPIKING_ARCHS['SpikerIR']),
               'path': {'visualization': str(root / 'vis'), 'models': str(root), 'training_states': str(root)},
               'train': {'optim_g': {'type': 'Adam', 'lr': 1e-3}, 'pixel_opt': {'type': 'L1Loss'},
                         'scheduler': {'type': 'MultiStepLR', 'milestones': [10], 'gamma': 0.5}},
               'val': {'suffix': 'run1', 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0},
                                                     'ssim': {'type': 'calculate_ssim', 'crop_border': 0}}}}
        torch.manual_seed(0)
        model = build_model(opt)
        if runs:  # the same weights in both models
            model.net_g.load_state_dict(runs['SRModel'][0].net_g.state_dict())
        model.validation(torch.utils.data.DataLoader(_Pairs(), batch_size=1), 7, None, save_img=True)
        files = {p.relative_to(root / 'vis').as_posix(): p.read_bytes() for p in (root / 'vis').rglob('*.png')}
        runs[model_type] = (model, files)
    (base, base_files), (ours, our_files) = runs['SRModel'], runs['SpikingSRModel']
    assert ours.metric_results == base.metric_results and base.metric_results['psnr'] > 0
    assert ours.best_metric_results == base.best_metric_results
    expected = ({f'photo{i}/photo{i}_7.png' for i in range(3)} if is_train
                else {f'pairs/photo{i}_run1.png' for i in range(3)})
    assert set(our_files) == set(base_files) == expected
    assert our_files == base_files
