"""Every options file parses with basicsr's own parse_options and builds its model (tiny widths, CPU, a teacher
checkpoint saved on the fly; datasets are not built)."""
import copy
import glob
import os
import sys

import pytest
import torch

import spikerir_plugin  # noqa: F401
from basicsr.archs import build_network
from basicsr.models import build_model
from basicsr.utils.options import parse_options
from basicsr.utils.registry import DATASET_REGISTRY
from conftest import REPO_ROOT

OPTIONS = os.path.join(REPO_ROOT, 'options')
TRAIN_FILES = ['train_SpikerIR_SIDD.yml', 'train_SpikerIR_GoPro.yml', 'train_SpikerIR_GaussianDenoise_sigma25.yml',
               'train_ESDNet_Rain200L.yml']
TEST_FILES = ['test_' + f[len('train_'):] for f in TRAIN_FILES]
# step 1 of each SpikerIR recipe: the student's analog twin, distilled from the ANN teacher (tested through step 2)
TWIN_FILES = [f.replace('train_SpikerIR_', 'train_SpikerIR_twin_') for f in TRAIN_FILES if 'SpikerIR' in f]
TEACHER_TEST_FILES = ['test_NAFNetLocal_GoPro.yml']  # a teacher tested as published, to compare with its student

# Architecture-size keys replaced by tiny values; every other key (type, LayerNorm_type, ...) comes from the file.
TINY_ARGS = {
    'SpikerIR': {'preset': 'tiny', 'T': 2, 'reduction_t': 2},
    'ESDNet': {'dim': 8, 'en_num_blocks': [1, 1, 1, 1], 'de_num_blocks': [1, 1, 1, 1], 'T': 2, 'reduction_t': 2,
               'reduction_c': 4},
    'NAFNet': {'width': 8, 'middle_blk_num': 1, 'enc_blk_nums': [1, 1, 1, 1], 'dec_blk_nums': [1, 1, 1, 1]},
    'NAFNetLocal': {'width': 8, 'middle_blk_num': 1, 'enc_blk_nums': [1, 1, 1, 1], 'dec_blk_nums': [1, 1, 1, 1]},
    'Restormer': {'dim': 8, 'num_blocks': [1, 1, 1, 1], 'num_refinement_blocks': 1, 'heads': [1, 1, 2, 2]},
}


def parse(monkeypatch, tmp_path, name, is_train):
    """basicsr's own parse_options (not the launch checks the plugin runs after it: there are no datasets here)."""
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', os.path.join(OPTIONS, name)])
    opt, _ = parse_options.__wrapped__(str(tmp_path), is_train=is_train)
    return opt


def shrink(net_opt):
    net_opt.update(TINY_ARGS[net_opt['type']])
    return net_opt


def test_every_train_file_has_a_matching_test_file():
    found = sorted(os.path.basename(f) for f in glob.glob(os.path.join(OPTIONS, '*.yml')))
    assert found == sorted(TRAIN_FILES + TWIN_FILES + TEST_FILES + TEACHER_TEST_FILES)


@pytest.mark.parametrize('name', TRAIN_FILES + TWIN_FILES)
def test_train_options_parse_and_build_the_model(monkeypatch, tmp_path, name):
    opt = parse(monkeypatch, tmp_path, name, is_train=True)
    expected = 'SpikerIRDistillModel' if 'network_t' in opt else 'SpikingSRModel'
    assert opt['model_type'] == expected and opt['is_train'] and not opt['dist']
    assert opt['num_gpu'] == torch.cuda.device_count()  # `auto`
    assert opt['train']['optim_g']['type'] == 'AdamW' and opt['train']['scheduler']['type'] == 'CosineAnnealingLR'
    for phase in ('train', 'val'):
        assert opt['datasets'][phase]['type'] in DATASET_REGISTRY
    twin = name in TWIN_FILES
    expected_logs = {'l_pix', 'l_fft', 'l_total'}
    if twin:  # step 1: the analog twin, output KD from the ANN teacher
        assert opt['network_g']['neuron'] == 'rate' and opt['network_g']['T'] == 1
        assert 'hint_opt' not in opt['train'] and opt['train']['kd_schedule']['type'] == 'constant'
        expected_logs |= {'l_kd', 'kd_weight'}
    elif 'network_t' in opt:  # step 2: the spiking student from step 1's twin
        step1 = parse(monkeypatch, tmp_path, name.replace('train_SpikerIR_', 'train_SpikerIR_twin_'), True)
        assert opt['network_t'] == step1['network_g'] and opt['train']['init_from_teacher']
        assert opt['path']['pretrain_network_t'] == f'experiments/{step1["name"]}/models/net_g_latest.pth'
        assert opt['train']['hint_opt']['type'] == 'HintLoss' and opt['train']['kd_schedule']['type'] == 'cosine'
        assert opt['train']['total_iter'] * 3 == step1['train']['total_iter']
        expected_logs |= {'l_hint', 'l_kd', 'kd_weight'}
    if 'network_t' in opt:
        assert 'network_t' in opt['path']['ignore_resume_networks']
        teacher = shrink(opt['network_t'])
        torch.save({'params': build_network(teacher).state_dict(),
                    'params_ema': build_network(teacher).state_dict()}, tmp_path / 'teacher.pth')
        opt['path']['pretrain_network_t'] = str(tmp_path / 'teacher.pth')
    shrink(opt['network_g'])
    opt['num_gpu'] = 0
    if 'network_t' in opt:
        opt['train']['hint_probe_size'] = 32
    model = build_model(opt)
    x = torch.rand(1, 3, 32, 32)
    model.feed_data({'lq': x, 'gt': x})
    model.optimize_parameters(1)
    assert set(model.get_current_log()) == expected_logs
    assert isinstance(model.optimizer_g, torch.optim.AdamW)
    assert isinstance(model.schedulers[0], torch.optim.lr_scheduler.CosineAnnealingLR)


def test_dataset_paths_follow_the_documented_layout(monkeypatch, tmp_path):
    sidd = parse(monkeypatch, tmp_path, 'train_SpikerIR_SIDD.yml', True)['datasets']
    assert sidd['train']['dataroot_lq'] == 'datasets/SIDD/train/input_crops.lmdb'
    assert sidd['train']['dataroot_gt'] == 'datasets/SIDD/train/gt_crops.lmdb'
    assert sidd['val']['dataroot_lq'] == 'datasets/SIDD/val/input_crops.lmdb'
    rain = parse(monkeypatch, tmp_path, 'train_ESDNet_Rain200L.yml', True)['datasets']
    assert rain['train']['dataroot_lq'] == 'datasets/Rain200L/train/input'
    assert rain['val']['dataroot_gt'] == 'datasets/Rain200L/test/target'
    gauss = parse(monkeypatch, tmp_path, 'train_SpikerIR_GaussianDenoise_sigma25.yml', True)['datasets']
    assert gauss['train']['type'] == 'GaussianDenoiseDataset' and gauss['train']['sigma'] == 25
    assert {'dataroot_gt', 'io_backend', 'gt_size', 'use_hflip', 'use_rot'} <= set(gauss['train'])


@pytest.mark.parametrize('name', TEST_FILES)
def test_test_options_parse_and_build_the_bare_student(monkeypatch, tmp_path, name):
    opt = parse(monkeypatch, tmp_path, name, is_train=False)
    assert not opt['is_train'] and 'suffix' in opt['val'] and 'save_img' in opt['val']
    assert opt['path']['pretrain_network_g'].endswith('models/net_g_latest.pth')
    net_opt = shrink(opt['network_g'])
    student = build_network(copy.deepcopy(net_opt))
    torch.save({'params': student.state_dict()}, tmp_path / 'student.pth')  # no params_ema: basicsr falls back
    opt['path']['pretrain_network_g'] = str(tmp_path / 'student.pth')
    opt['num_gpu'] = 0
    model = build_model(opt)
    assert type(model.net_g).__name__ == net_opt['type'] and getattr(model, 'net_t', None) is None
    model.feed_data({'lq': torch.rand(1, 3, 24, 40)})
    model.test()
    assert model.output.shape == (1, 3, 24, 40) and torch.isfinite(model.output).all()


@pytest.mark.parametrize('name', TEACHER_TEST_FILES)
def test_teacher_test_options_build_basicsr_srmodel_with_local_statistics(monkeypatch, tmp_path, name):
    opt = parse(monkeypatch, tmp_path, name, is_train=False)
    assert opt['model_type'] == 'SRModel' and opt['network_g']['type'] == 'NAFNetLocal'
    assert opt['network_g']['train_size'] == [1, 3, 256, 256]
    net_opt = shrink(opt['network_g'])
    net_opt['train_size'] = 16  # windows of 24 at full resolution: the 24x40 input below pools locally
    torch.save({'params': build_network(copy.deepcopy(net_opt)).state_dict()}, tmp_path / 'teacher.pth')
    opt['path']['pretrain_network_g'] = str(tmp_path / 'teacher.pth')
    opt['num_gpu'] = 0
    model = build_model(opt)
    assert type(model.net_g).__name__ == 'NAFNetLocal'
    model.feed_data({'lq': torch.rand(1, 3, 24, 40)})
    model.test()
    assert model.output.shape == (1, 3, 24, 40) and torch.isfinite(model.output).all()


def test_network_checkpoint_reads_each_networks_keys_with_its_own_default():
    """The models and the tools read path.* through one function: the student's weights as validation reports them
    (params_ema), a teacher's as basicsr reads a pretrained network (params); ~ means a raw state dict."""
    from spikerir_plugin.utils.options import network_checkpoint
    opt = {'path': {'pretrain_network_g': 'g.pth', 'pretrain_network_t': 't.pth'}}
    assert network_checkpoint(opt, 'g') == ('g.pth', 'params_ema', True)
    assert network_checkpoint(opt, 't') == ('t.pth', 'params', True)
    opt['path'].update(param_key_t=None, strict_load_t=False, param_key_g='params')
    assert network_checkpoint(opt, 't') == ('t.pth', None, False)
    assert network_checkpoint(opt, 'g') == ('g.pth', 'params', True)
