"""Mistakes between options, data and earlier steps are errors that name the key, file or step to fix, raised before
basicsr creates or moves any folder: unknown plugin keys, runs that would train nothing, step 2 before step 1,
hint layers, channels, paired folders and pair sizes, and a test run whose checkpoint does not exist. Plus the
console warning of a barely initialised student and the restore tool's missing inputs."""
import logging
import os
import re
import sys

import cv2
import pytest
import torch
import yaml
from basicsr.archs import build_network

import spikerir_plugin  # noqa: F401  (registers the plugin's names)
from conftest import REPO_ROOT, photo_crops, write_noisy_pairs
from spikerir_plugin.models.run_checks import training_options_for
from spikerir_plugin.utils.checkpoint import CheckpointMissing, read_checkpoint
from spikerir_plugin.utils.options import OptionKeyError, unknown_option_keys
from test_faults import STUDENT, TEACHER, clean_folder, pipeline, run_options, write_yml  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def teacher_file(tmp_path_factory):
    path = tmp_path_factory.mktemp('teacher') / 'nafnet.pth'
    torch.manual_seed(0)
    torch.save({'params': build_network(dict(TEACHER)).state_dict()}, path)
    return str(path)


def distill_run(name, data, teacher, **train):
    opt = run_options(name, data, model_type='SpikerIRDistillModel', network_t=dict(TEACHER))
    opt['path'].update(pretrain_network_t=teacher, param_key_t='params')
    opt['train'].update(kd_opt={'type': 'L1Loss'}, hint_opt={'type': 'HintLoss', 'criterion': 'mse'},
                        hint_probe_size=32, **train)
    return opt


def refused(tmp_path, opt, error=ValueError, match=None):
    """The run fails with ``error`` before basicsr created experiments/<name> (or anything under it)."""
    with pytest.raises(error, match=match) as caught:
        pipeline(tmp_path, opt)
    assert not (tmp_path / 'experiments').exists(), os.listdir(tmp_path / 'experiments')
    return str(caught.value)


# ---------------------------------------------------------------------------------------------- option keys
TYPOS = [  # (section, patch, what the error names)
    ('train', {'hint_opts': {'type': 'HintLoss'}}, r'train\.hint_opts \(did you mean hint_opt\?\)'),
    ('train', {'pixel_opts': {'type': 'L1Loss'}}, r'train\.pixel_opts \(did you mean pixel_opt'),
    ('train', {'init_from_teachr': True}, r'train\.init_from_teachr \(did you mean init_from_teacher\?\)'),
    ('path', {'pretrain_network_q': 'x.pth'}, r'path\.pretrain_network_q \(did you mean pretrain_network_t or pretrain_network_g'),
    ('network_t', {'widht': 8}, r'network_t\.widht \(did you mean width\?\)'),
    ('val', {'tile': {'size': 32, 'overlpa': 4}}, r'val\.tile\.overlpa \(did you mean overlap\?\)'),
    ('speed', {'bf61': True}, r'speed\.bf61 \(did you mean bf16\?\)'),
]


@pytest.mark.parametrize('section, patch, message', TYPOS, ids=[t[2].split(' ')[0].replace('\\', '') for t in TYPOS])
def test_a_misspelt_plugin_key_is_an_error_naming_its_nearest_valid_key(tmp_path, clean_folder, teacher_file, section,
                                                                        patch, message):
    opt = distill_run('typo', clean_folder, teacher_file)
    opt[section] = dict(opt.get(section) or {}, **patch)
    text = refused(tmp_path, opt, OptionKeyError, message)
    assert 'basicsr would ignore them silently' in text


def test_plugin_dataset_keys_are_checked_and_basicsr_keys_stay_valid(tmp_path, clean_folder):
    opt = run_options('typo', clean_folder)
    opt['datasets']['train']['sigmaa'] = 25
    refused(tmp_path, opt, OptionKeyError, r'datasets\.train\.sigmaa \(did you mean sigma')
    # every key basicsr itself reads is accepted (options copied from basicsr's own files stay valid)
    opt = run_options('basicsr_keys', clean_folder)
    opt['train'].update(perceptual_opt=None, warmup_iter=-1, gan_opt=None)
    opt['path'].update(strict_load_g=True, param_key_g='params', ignore_resume_networks=None)
    assert unknown_option_keys(opt) == []
    # distillation keys belong to the distillation model only
    opt['train']['kd_opt'] = {'type': 'L1Loss'}
    assert [p.split(' ')[0] for p in unknown_option_keys(opt)] == ['train.kd_opt']
    assert unknown_option_keys(opt, distill=True) == []


def test_basicsr_models_keep_ignoring_unknown_keys(tmp_path, clean_folder):
    """A guest: basicsr's own SRModel runs with the plugin installed exactly as without it."""
    opt = run_options('srmodel', clean_folder, total_iter=1, save_freq=1, model_type='SRModel')
    opt['network_g'] = {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'scale': 1, 'num_feat': 8,
                        'num_block': 1, 'num_grow_ch': 4}
    opt['train'].update(hint_opts={'type': 'HintLoss'}, optim_g={'type': 'Adam', 'lr': 1e-3},
                        scheduler={'type': 'MultiStepLR', 'milestones': [10], 'gamma': 0.5})
    pipeline(tmp_path, opt)
    assert (tmp_path / 'experiments' / 'srmodel' / 'models' / 'net_g_latest.pth').is_file()


# ---------------------------------------------------------------------------------------------- runs that train nothing
@pytest.mark.parametrize('total_iter', [0, -5, 2.5])
def test_a_run_that_would_train_nothing_is_refused(tmp_path, clean_folder, total_iter):
    opt = run_options('nothing', clean_folder, total_iter=total_iter)
    refused(tmp_path, opt, ValueError, r'train\.total_iter: .*needs an integer total_iter >= 1')


def test_a_training_set_smaller_than_one_batch_is_refused(tmp_path, clean_folder):
    opt = run_options('no_batch', clean_folder)
    opt['datasets']['train']['batch_size_per_gpu'] = 9  # 8 images, drop_last
    refused(tmp_path, opt, ValueError, r"datasets\.train \('clean'\): 8 training image\(s\) .*fewer than "
                                       r'batch_size_per_gpu 9.*at most 8')
    opt['datasets']['train']['dataset_enlarge_ratio'] = 2  # 16 per epoch: trains
    pipeline(tmp_path, dict(opt, name='enlarged', train=dict(opt['train'], total_iter=1)))


# ---------------------------------------------------------------------------------------------- the recipe's steps
def test_step_two_before_step_one_says_which_options_file_trains_the_twin(tmp_path, clean_folder, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'options').mkdir()
    write_yml(tmp_path / 'options' / 'train_my_twin.yml', {'name': 'my_twin', 'model_type': 'SpikerIRDistillModel'})
    opt = distill_run('student', clean_folder, 'experiments/my_twin/models/net_g_latest.pth')
    text = refused(tmp_path, opt, CheckpointMissing, r'path\.pretrain_network_t: teacher checkpoint')
    assert 'training with options/train_my_twin.yml (name: my_twin) writes: run that first' in text
    assert 'python basicsr/train.py -opt options/train_my_twin.yml' in text and 'Traceback' not in text
    # every retry is refused the same way, and still no folder is made (no archive piles up)
    refused(tmp_path, opt, CheckpointMissing)


def test_the_shipped_step_two_files_name_their_step_one_files():
    for task in ('SIDD', 'GoPro', 'GaussianDenoise_sigma25'):
        student = yaml.safe_load(open(os.path.join(REPO_ROOT, 'options', f'train_SpikerIR_{task}.yml')))
        name, files = training_options_for(student['path']['pretrain_network_t'])
        twin = yaml.safe_load(open(os.path.join(REPO_ROOT, 'options', f'train_SpikerIR_twin_{task}.yml')))
        assert name == twin['name'] and [os.path.basename(f) for f in files] == [f'train_SpikerIR_twin_{task}.yml']


def test_teacher_mismatch_and_hint_layers_are_checked_before_any_folder(tmp_path, clean_folder, teacher_file):
    opt = distill_run('wide', clean_folder, teacher_file)
    opt['network_t']['width'] = 16
    refused(tmp_path, opt, ValueError, r'set network_t\.width: 8 \(the checkpoint fits it exactly')
    opt = distill_run('hints', clean_folder, teacher_file, hint_layers=[['decoder_level9', 'decoders.1']])
    refused(tmp_path, opt, KeyError, r'decoder_level9')
    opt = distill_run('channels', clean_folder, teacher_file)
    opt['datasets']['train']['in_ch'] = 1
    refused(tmp_path, opt, ValueError, r'datasets\.train\.in_ch: 1 gives 1-channel images, but network_g SpikerIR '
                                       r'reads 3 channels')


# ---------------------------------------------------------------------------------------------- paired folders
@pytest.fixture
def pairs(tmp_path):
    return write_noisy_pairs(str(tmp_path / 'pairs'), photo_crops(48, 1)[:3])


def paired_run(name, lq_dir, gt_dir, data):
    opt = run_options(name, data)
    opt['datasets']['val'] = {'name': 'my-val', 'type': 'PairedImageDataset', 'dataroot_lq': lq_dir,
                              'dataroot_gt': gt_dir, 'io_backend': {'type': 'disk'}}
    opt['val'] = {'val_freq': 2, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0}}}
    return opt


def test_a_missing_file_in_paired_folders_names_the_folders_and_the_file(tmp_path, pairs, clean_folder):
    lq_dir, gt_dir = pairs
    os.rename(os.path.join(lq_dir, '001.png'), os.path.join(lq_dir, '001_renamed.png'))
    text = refused(tmp_path, paired_run('renamed', lq_dir, gt_dir, clean_folder), ValueError)
    assert text.startswith("datasets.val ('my-val'): the paired folders do not pair")
    assert f"1 GT file(s) in dataroot_gt '{gt_dir}' have no LQ file in dataroot_lq '{lq_dir}' (001.png)" in text
    assert '1 LQ file(s) in dataroot_lq' in text and '001_renamed.png' in text


def test_a_validation_pair_of_the_wrong_size_is_found_at_launch(tmp_path, pairs, clean_folder):
    lq_dir, gt_dir = pairs
    img = cv2.imread(os.path.join(gt_dir, '002.png'))
    cv2.imwrite(os.path.join(gt_dir, '002.png'), img[:40, :40])
    text = refused(tmp_path, paired_run('sizes', lq_dir, gt_dir, clean_folder), ValueError)
    assert text.startswith(f"datasets.val ('my-val'): LQ '{lq_dir}/002.png' is 48x48 and GT '{gt_dir}/002.png' is "
                           '40x40, but each GT must be at least scale (1) times its LQ')


def test_pairing_reads_files_as_basicsr_does(tmp_path, pairs):
    """A subfolder is no file of the pairing, a meta_info_file selects the pairs, and an EXIF-rotated JPEG has the
    size basicsr (cv2) decodes it with."""
    from PIL import Image
    from spikerir_plugin.models.run_checks import check_datasets
    lq_dir, gt_dir = pairs
    os.mkdir(os.path.join(gt_dir, 'sub'))
    (tmp_path / 'unlisted.png').write_bytes(open(os.path.join(gt_dir, '000.png'), 'rb').read())
    os.rename(tmp_path / 'unlisted.png', os.path.join(gt_dir, 'unlisted.png'))
    val = {'name': 'v', 'type': 'PairedImageDataset', 'dataroot_lq': lq_dir, 'dataroot_gt': gt_dir,
           'io_backend': {'type': 'disk'}, 'phase': 'val', 'scale': 1}
    with pytest.raises(ValueError, match=r'unlisted\.png'):  # a file with no partner is named; the folder is not
        check_datasets({'scale': 1, 'datasets': {'val': val}})
    meta = tmp_path / 'meta.txt'
    meta.write_text('000.png\n001.png\n002.png\n')
    check_datasets({'scale': 1, 'datasets': {'val': dict(val, meta_info_file=str(meta))}})
    # a 40x20 (w x h) JPEG shown rotated (orientation 6) is 20 wide and 40 high for cv2
    lq2, gt2 = tmp_path / 'lq2', tmp_path / 'gt2'
    lq2.mkdir(), gt2.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new('RGB', (40, 20)).save(gt2 / 'a.jpg', exif=exif)
    cv2.imwrite(str(lq2 / 'a.jpg'), cv2.imread(str(gt2 / 'a.jpg')))  # the LQ saved as cv2 decoded it (no EXIF)
    assert cv2.imread(str(lq2 / 'a.jpg')).shape[:2] == (40, 20)
    check_datasets({'scale': 1, 'datasets': {'val': dict(val, dataroot_lq=str(lq2), dataroot_gt=str(gt2))}})


def test_model_option_combinations_are_refused_before_any_folder(tmp_path, clean_folder):
    opt = run_options('compiled', clean_folder)
    opt['train']['energy_opt'] = {'type': 'SynOpsLoss', 'loss_weight': 1.0}
    opt['speed'] = {'compile': True}
    refused(tmp_path, opt, ValueError, r'train\.energy_opt reads the spikes through forward hooks')
    opt = run_options('tiles', clean_folder, val={'tile': {'size': 8, 'overlap': 8}})
    refused(tmp_path, opt, ValueError, r'val\.tile: overlap \(8\) must be smaller than size \(8\)')


# ---------------------------------------------------------------------------------------------- test runs
def test_a_test_run_without_its_checkpoint_moves_nothing_aside(tmp_path, pairs, monkeypatch):
    """basicsr's test pipeline archives results/<name> before it builds the model; the check comes first."""
    from basicsr.test import test_pipeline
    lq_dir, gt_dir = pairs
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'options').mkdir()
    write_yml(tmp_path / 'options' / 'train_me.yml', {'name': 'trained_me'})
    previous = tmp_path / 'results' / 'test_me'
    previous.mkdir(parents=True)
    (previous / 'kept.txt').write_text('earlier results')
    opt = {'name': 'test_me', 'model_type': 'SpikingSRModel', 'scale': 1, 'num_gpu': 0,
           'datasets': {'test_1': {'name': 'my-test', 'type': 'PairedImageDataset', 'dataroot_lq': lq_dir,
                                   'dataroot_gt': gt_dir, 'io_backend': {'type': 'disk'}}},
           'network_g': dict(STUDENT),
           'path': {'pretrain_network_g': 'experiments/trained_me/models/net_g_latest.pth', 'strict_load_g': True},
           'val': {'save_img': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0}}}}
    yml = write_yml(tmp_path / 'test.yml', opt)
    monkeypatch.setattr(sys, 'argv', ['test.py', '-opt', yml])
    with pytest.raises(CheckpointMissing, match=r'path\.pretrain_network_g: network_g checkpoint .*does not exist.*'
                                                r'training with options/train_me.yml \(name: trained_me\) writes'):
        test_pipeline(str(tmp_path))
    assert os.listdir(tmp_path / 'results') == ['test_me'] and (previous / 'kept.txt').is_file()


# ---------------------------------------------------------------------------------------------- smaller items
def test_a_student_barely_initialised_from_its_twin_warns_on_the_console(tmp_path, clean_folder, caplog):
    twin = {'type': 'SpikerIR', 'preset': 'base', 'T': 1, 'reduction_t': 1, 'neuron': 'rate'}
    path = tmp_path / 'twin.pth'
    torch.save({'params': build_network(dict(twin)).state_dict()}, path)
    opt = distill_run('preset', clean_folder, str(path), init_from_teacher=True, hint_adapter='conv1x1')
    opt['network_t'] = twin
    opt['train'].update(total_iter=1)
    with caplog.at_level(logging.WARNING, logger='basicsr'):
        pipeline(tmp_path, opt)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    warning = next(m for m in warnings if m.startswith('train.init_from_teacher: only'))
    assert re.search(r"only \d+ of the student's \d+ entries", warning)
    assert "network_g vs network_t: preset: 'tiny' vs 'base'" in warning


def test_a_truncated_checkpoint_message_ends_in_whole_sentences(tmp_path):
    path = tmp_path / 'cut.pth'
    torch.save({'params': {'w': torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:1500])
    with pytest.raises(ValueError) as caught:
        read_checkpoint(str(path), 'path.pretrain_network_t', 'teacher checkpoint')
    text = str(caught.value)
    assert 'damaged torch archive' in text and 'there is a high' not in text
    assert re.search(r'\(\d+ bytes; torch: [^()]*\): it was truncated', text), text


def test_restore_names_the_inputs_it_cannot_find(tmp_path, capsys):
    from spikerir_plugin.tools import restore
    ckpt = tmp_path / 'tiny.pth'
    torch.save({'params': build_network(dict(STUDENT)).state_dict()}, ckpt)
    args = ['-o', str(tmp_path / 'out'), '--arch', 'SpikerIR', '--arch-args', 'preset=tiny,T=2,reduction_t=2',
            '--ckpt', str(ckpt)]
    with pytest.raises(SystemExit) as exit_info:
        restore.main(['-i', str(tmp_path / 'nothere.png'), *args])
    assert exit_info.value.code == 2
    assert f"no input images found (-i {tmp_path / 'nothere.png'}: no such file or folder)" in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()
