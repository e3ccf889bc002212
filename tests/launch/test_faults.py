"""Fault injection: every failure names the file, the option that pointed at it and the fix; writes are atomic;
resume never loses or hides work. Each case also checks that the checkpoints already on disk keep their sha256."""
import glob
import hashlib
import os
import pickle
import re
import shutil
import signal
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml

from spikerir_plugin import launch
import spikerir_plugin  # noqa: F401  (registers the plugin's names)
from basicsr.archs import build_network
from basicsr.data import build_dataset
from basicsr.models import build_model
from conftest import REPO_ROOT, photo_crops, write_noisy_pairs
from spikerir_plugin.models.exact_resume import ResumeError
from spikerir_plugin.models.spiking_sr_model import SpikingSRModel
from spikerir_plugin.utils.checkpoint import CheckpointError, load_weights, read_checkpoint

STUDENT = {'type': 'SpikerIR', 'preset': 'tiny', 'T': 2, 'reduction_t': 2}
TEACHER = {'type': 'NAFNet', 'width': 8, 'middle_blk_num': 1, 'enc_blk_nums': [1, 1], 'dec_blk_nums': [1, 1]}


class Opaque:
    """A class torch.load(weights_only=True) does not know (a checkpoint that pickles it is refused)."""


def sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def tree_hashes(folder):
    """{relative path: sha256} of every file under ``folder``."""
    return {os.path.relpath(p, folder): sha256(p) for p in glob.glob(os.path.join(folder, '**', '*'), recursive=True)
            if os.path.isfile(p)}


def write_yml(path, opt):
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return str(path)


@pytest.fixture(scope='module')
def clean_folder(tmp_path_factory):
    """8 clean 48x48 colour crops (BGR PNG) for GaussianDenoiseDataset."""
    folder = tmp_path_factory.mktemp('clean')
    for i, crop in enumerate(photo_crops(48, 2)):
        cv2.imwrite(str(folder / f'{i:03d}.png'), crop[..., ::-1])
    return str(folder)


def run_options(name, data, total_iter=6, save_freq=2, **top):
    opt = {
        'name': name, 'model_type': 'SpikingSRModel', 'scale': 1, 'num_gpu': 0, 'manual_seed': 5,
        'datasets': {'train': {'name': 'clean', 'type': 'GaussianDenoiseDataset', 'dataroot_gt': data,
                               'io_backend': {'type': 'disk'}, 'sigma': 25, 'gt_size': 32, 'use_hflip': True,
                               'use_rot': True, 'num_worker_per_gpu': 0, 'batch_size_per_gpu': 2,
                               'dataset_enlarge_ratio': 1, 'prefetch_mode': None}},
        'network_g': dict(STUDENT),
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0.9, 'optim_g': {'type': 'AdamW', 'lr': 1e-3, 'weight_decay': 0.0},
                  'scheduler': {'type': 'CosineAnnealingLR', 'T_max': 10, 'eta_min': 1e-5},
                  'total_iter': total_iter, 'warmup_iter': -1, 'pixel_opt': {'type': 'L1Loss'}},
        'logger': {'print_freq': 100, 'save_checkpoint_freq': save_freq, 'use_tb_logger': False},
    }
    opt.update(top)
    return opt


def pipeline(root, opt, *flags):
    """basicsr's own train_pipeline in this process, as `spikerir-train -opt <file> [flags]` would run it."""
    from basicsr.train import train_pipeline
    yml = write_yml(root / f'{opt["name"]}_{len(os.listdir(root))}.yml', opt)
    argv, sys.argv = sys.argv, ['train.py', '-opt', yml, *flags]
    try:
        train_pipeline(str(root))
    finally:
        sys.argv = argv


def parsed(root, opt, *flags):
    """The options dict train_pipeline hands to the resume hook (basicsr's parse_options)."""
    from basicsr.utils.options import parse_options
    yml = write_yml(root / f'{opt["name"]}_parsed.yml', opt)
    argv, sys.argv = sys.argv, ['train.py', '-opt', yml, *flags]
    try:
        return parse_options(str(root), is_train=True)[0]
    finally:
        sys.argv = argv


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory, clean_folder):
    """A real 6-iteration run (checkpoints at 2, 4, 6): experiments/tiny under the returned root."""
    root = tmp_path_factory.mktemp('finished')
    pipeline(root, run_options('tiny', clean_folder))
    return root / 'experiments' / 'tiny'


@pytest.fixture
def run_copy(tmp_path, finished_run):
    """A private copy of the finished run under tmp_path/experiments/tiny, and its hashes."""
    exp = tmp_path / 'experiments' / 'tiny'
    shutil.copytree(finished_run, exp)
    return exp, tree_hashes(exp)


# ================================================================== 1. the one reader: every kind of unreadable file
def _good_bytes(tmp_path):
    path = tmp_path / 'good.pth'
    torch.save({'params': {'w': torch.randn(256)}}, path)
    return path.read_bytes()


def _flip_tensor_bytes(data):
    start = data.index(b'data/0') + 64  # inside the first tensor's storage
    return data[:start] + bytes(b ^ 0xFF for b in data[start:start + 32]) + data[start + 32:]


def _legacy_truncated(tmp_path):
    path = tmp_path / 'legacy.pth'
    torch.save({'params': {'w': torch.randn(256)}}, path, _use_new_zipfile_serialization=False)
    return path.read_bytes()[:200]


def _unsafe_pickle(tmp_path):
    path = tmp_path / 'unsafe.pth'
    torch.save({'params': {'w': torch.zeros(2)}, 'meta': Opaque()}, path)
    return path.read_bytes()


FILE_FAULTS = [
    ('truncated archive', lambda t: _good_bytes(t)[:len(_good_bytes(t)) // 2], CheckpointError,
     r'damaged torch archive .*truncated or corrupted'),
    ('truncated end', lambda t: _good_bytes(t)[:-9], CheckpointError, r'damaged torch archive'),
    ('bytes changed in tensor data', lambda t: _flip_tensor_bytes(_good_bytes(t)), CheckpointError,
     r'fails its CRC check'),
    ('empty file', lambda t: b'', CheckpointError, r'is empty \(0 bytes\): it was cut off while being written'),
    ('text file', lambda t: b'model weights go here\n', CheckpointError,
     r'is not a torch checkpoint .*It is a text file'),
    ('git lfs pointer', lambda t: b'version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 12\n',
     CheckpointError, r'Git LFS pointer.*git lfs pull'),
    ('html page', lambda t: b'<!DOCTYPE html><html><body>Sign in</body></html>', CheckpointError,
     r'HTML page.*download the file itself'),
    ('plain pickle', lambda t: pickle.dumps({'params': [1, 2]}), CheckpointError, r'is not a torch checkpoint'),
    ('random bytes', lambda t: np.random.default_rng(0).bytes(3000), CheckpointError, r'is not a torch checkpoint'),
    ('truncated legacy file', _legacy_truncated, CheckpointError, r'damaged torch archive'),
    ('pickled class', _unsafe_pickle, CheckpointError,
     r'pickled object of type test_faults\.Opaque.*weights_only=False.*add_safe_globals\(\[test_faults\.Opaque\]\)'),
]


@pytest.mark.parametrize('make, error, message', [f[1:] for f in FILE_FAULTS], ids=[f[0] for f in FILE_FAULTS])
def test_reader_names_file_option_and_fix(tmp_path, make, error, message):
    path = tmp_path / 'teacher.pth'
    path.write_bytes(make(tmp_path))
    before = sha256(path)
    with pytest.raises(error, match=message) as caught:
        read_checkpoint(str(path), 'path.pretrain_network_t', 'teacher checkpoint')
    text = str(caught.value)
    assert text.startswith(f"path.pretrain_network_t: teacher checkpoint '{path}'")
    if 'pickled object' not in text:
        assert 'Re-create or re-download it' in text
    assert 'Traceback' not in text and sha256(path) == before


def test_reader_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"path.resume_state: training state '.*nope.state' does not exist "
                                                r"\(relative paths are resolved against the current directory"):
        read_checkpoint(str(tmp_path / 'nope.state'), 'path.resume_state', 'training state')
    with pytest.raises(CheckpointError, match='is a directory, not a file'):
        read_checkpoint(str(tmp_path), 'path.pretrain_network_g', 'network_g checkpoint')


def test_reader_loads_good_files_of_both_formats(tmp_path):
    """The positive control of the cases above: intact zip and legacy files load, CRC check included."""
    weights = {'w': torch.randn(256)}
    for name, zipped in (('zip.pth', True), ('legacy.pth', False)):
        torch.save({'params': weights}, tmp_path / name, _use_new_zipfile_serialization=zipped)
        assert torch.equal(read_checkpoint(str(tmp_path / name))['params']['w'], weights['w'])


def test_wrong_param_key_lists_the_keys_present(tmp_path):
    net = build_network(dict(TEACHER))
    path = tmp_path / 'teacher.pth'
    torch.save({'params_ema': net.state_dict(), 'epoch': 3}, path)
    with pytest.raises(KeyError, match=r"path.param_key_t: key 'weights' not in teacher checkpoint .*teacher.pth'; "
                                       r"available keys: epoch, params_ema \(use path.param_key_t: ~"):
        load_weights(build_network(dict(TEACHER)), str(path), 'weights', which='t')
    torch.save({'iter': 4, 'epoch': 1, 'optimizers': [], 'schedulers': []}, path)
    with pytest.raises(KeyError, match=r'It is a training state .*use models/net_g_<iter>.pth'):
        load_weights(build_network(dict(TEACHER)), str(path), 'params', which='t')
    torch.save({'params': {'intro': {'weight': torch.zeros(1)}}}, path)
    with pytest.raises(ValueError, match=r'is not a state dict of tensors \(it holds a dict with keys intro\); set '
                                         r'path.param_key_t'):
        load_weights(build_network(dict(TEACHER)), str(path), 'params', which='t')


# ================================================================== 2. every load of a run goes through the reader
@pytest.fixture(scope='module')
def teacher_file(tmp_path_factory):
    path = tmp_path_factory.mktemp('teacher') / 'nafnet.pth'
    torch.manual_seed(0)
    torch.save({'params': build_network(dict(TEACHER)).state_dict()}, path)
    return path


def model_opt(tmp, **top):
    opt = {'name': 'unit', 'model_type': 'SpikingSRModel', 'num_gpu': 0, 'is_train': True, 'dist': False,
           'rank': 0, 'world_size': 1, 'scale': 1, 'network_g': dict(STUDENT),
           'path': {'models': str(tmp), 'training_states': str(tmp), 'visualization': str(tmp / 'vis')},
           'train': {'optim_g': {'type': 'AdamW', 'lr': 1e-3}, 'pixel_opt': {'type': 'L1Loss'}},
           'val': {'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0}}}}
    opt.update(top)
    return opt


def distill_opt(tmp, teacher):
    opt = model_opt(tmp, model_type='SpikerIRDistillModel', network_t=dict(TEACHER))
    opt['path'].update(pretrain_network_t=str(teacher), param_key_t='params')
    opt['train'].update(kd_opt={'type': 'L1Loss'}, hint_opt={'type': 'HintLoss', 'criterion': 'mse'},
                        hint_probe_size=32)
    return opt


def _damaged(data):
    return data[:len(data) // 3]


LOAD_FAULTS = [  # (which file, how it is damaged, option named, words of the fix)
    ('teacher', _damaged, 'path.pretrain_network_t', r'damaged torch archive'),
    ('teacher', lambda d: b'see https://example.org/nafnet-weights\n', 'path.pretrain_network_t', 'It is a text file'),
    ('student pretrain', lambda d: b'', 'path.pretrain_network_g', r'empty \(0 bytes\)'),
    ('student pretrain', lambda d: _unsafe_pickle_bytes(), 'path.pretrain_network_g',
     r'test_faults.Opaque, which torch.load\(weights_only=True\) refuses'),
]


def _unsafe_pickle_bytes():
    import io
    buffer = io.BytesIO()
    torch.save({'params': build_network(dict(STUDENT)).state_dict(), 'meta': Opaque()}, buffer)
    return buffer.getvalue()



@pytest.mark.parametrize('which, damage, option, words', LOAD_FAULTS, ids=[f'{f[0]}-{f[3][:12]}' for f in LOAD_FAULTS])
def test_model_build_names_the_option_of_a_damaged_checkpoint(tmp_path, teacher_file, which, damage, option, words):
    bad = tmp_path / 'bad.pth'
    if which == 'teacher':
        bad.write_bytes(damage(teacher_file.read_bytes()))
        opt = distill_opt(tmp_path, bad)
    else:
        torch.save({'params': build_network(dict(STUDENT)).state_dict()}, tmp_path / 'student.pth')
        bad.write_bytes(damage((tmp_path / 'student.pth').read_bytes()))
        opt = model_opt(tmp_path)
        opt['path']['pretrain_network_g'] = str(bad)
        opt['train']['ema_decay'] = 0.9  # the EMA copy reads the same file through the same reader
    before = sha256(bad), sha256(teacher_file)
    with pytest.raises(CheckpointError, match=rf"{option}: .* '{re.escape(str(bad))}' .*{words}"):
        build_model(opt)
    assert (sha256(bad), sha256(teacher_file)) == before


# ================================================================== 3. device and data errors
def test_cuda_asked_without_cuda_names_num_gpu_0_and_auto(tmp_path, clean_folder, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)  # a machine without CUDA, here or on a GPU host
    message = r'num_gpu: 1 asks for CUDA, .*sees no CUDA device .*set num_gpu: 0 .*num_gpu: auto'
    with pytest.raises(ValueError, match=message):
        build_model(model_opt(tmp_path, num_gpu=1))
    with pytest.raises(ValueError, match=message):  # a run stops before basicsr makes its experiment folder
        pipeline(tmp_path, run_options('gpu', clean_folder, num_gpu=1))
    assert not (tmp_path / 'experiments').exists()


CHANNEL_FAULTS = [
    ({'train': {'name': 'grey', 'type': 'GaussianDenoiseDataset', 'in_ch': 1}}, 'network_g', {},
     r'datasets.train.in_ch: 1 gives 1-channel images, but network_g SpikerIR reads 3 channels '
     r'\(network_g.in_channels \(default 3\)\): .*set network_g.in_channels: 1'),
    ({'val': {'name': 'y', 'type': 'PairedImageDataset', 'color': 'y'}}, 'network_g', {'in_channels': 3},
     r'datasets.val.color: y gives 1-channel images, but network_g SpikerIR reads 3 channels '
     r'\(network_g.in_channels: 3\)'),
]


@pytest.mark.parametrize('datasets, key, args, message', CHANNEL_FAULTS, ids=['gaussian-in_ch', 'paired-color-y'])
def test_channels_of_data_and_network_are_checked_at_build(tmp_path, datasets, key, args, message):
    opt = model_opt(tmp_path, datasets=datasets)
    opt['network_g'].update(args)
    with pytest.raises(ValueError, match=message):
        build_model(opt)


def test_teacher_channels_are_checked_too(tmp_path):
    grey_teacher = dict(TEACHER, img_channel=1)
    path = tmp_path / 'grey_teacher.pth'
    torch.save({'params': build_network(dict(grey_teacher)).state_dict()}, path)
    opt = distill_opt(tmp_path, path)
    opt['network_t'] = grey_teacher
    opt['datasets'] = {'train': {'name': 'rgb', 'type': 'GaussianDenoiseDataset', 'in_ch': 3}}
    with pytest.raises(ValueError, match=r'datasets.train.in_ch: 3 gives 3-channel images, but network_t NAFNet reads '
                                         r'1 channels \(network_t.img_channel: 1\)'):
        build_model(opt)


def test_pixel_unshuffle_arch_is_not_flagged(tmp_path):
    """RRDBNet at scale 1 folds 3 image channels into 48 for its first convolution: not a mismatch."""
    net = {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'scale': 1, 'num_feat': 8, 'num_block': 1,
           'num_grow_ch': 4}
    opt = model_opt(tmp_path, network_g=net, datasets={'train': {'name': 'p', 'type': 'PairedImageDataset'}})
    assert build_model(opt).net_g.training


def _lmdb(tmp_path, name, clean_folder):
    from spikerir_plugin.tools.prepare_data import prepare_folder_lmdb
    path = tmp_path / name
    prepare_folder_lmdb(clean_folder, str(path))
    return path


def test_lmdb_without_meta_info_names_spikerir_prepare(tmp_path, clean_folder):
    db = _lmdb(tmp_path, 'train.lmdb', clean_folder)
    os.remove(db / 'meta_info.txt')
    opt = run_options('no_meta', str(db))
    opt['datasets']['train']['io_backend'] = {'type': 'lmdb'}
    with pytest.raises(FileNotFoundError, match=rf"datasets.train.dataroot_gt: LMDB '{re.escape(str(db))}' has no "
                                                rf"meta_info.txt .*spikerir-prepare folder-lmdb --src <folder of "
                                                rf"images> --out {re.escape(str(db))}"):
        pipeline(tmp_path, opt)
    assert not (tmp_path / 'experiments').exists()  # stopped before basicsr made (or moved) any folder
    dataset_opt = dict(opt['datasets']['train'], phase='train')
    with pytest.raises(FileNotFoundError, match=r"dataroot_gt of dataset 'clean': .* has no meta_info.txt.*"
                                                r'spikerir-prepare folder-lmdb'):
        build_dataset(dataset_opt)  # the dataset's own check, for runs outside the train pipeline


@pytest.mark.parametrize('case', ['paired lmdb without meta_info', 'lmdb not ending in .lmdb', 'missing folder'])
def test_dataset_paths_are_checked_before_the_experiment_starts(tmp_path, clean_folder, case):
    opt = run_options('paths', clean_folder)
    train = {'name': 'pairs', 'type': 'PairedImageDataset', 'io_backend': {'type': 'lmdb'}, 'gt_size': 32,
             'batch_size_per_gpu': 2, 'num_worker_per_gpu': 0}
    if case == 'paired lmdb without meta_info':
        lq, gt = _lmdb(tmp_path, 'input.lmdb', clean_folder), _lmdb(tmp_path, 'target.lmdb', clean_folder)
        os.remove(lq / 'meta_info.txt')
        train.update(dataroot_lq=str(lq), dataroot_gt=str(gt))
        error, message = FileNotFoundError, (rf"datasets.train.dataroot_lq: LMDB '{re.escape(str(lq))}' has no "
                                             rf"meta_info.txt.*spikerir-prepare paired --input .* --out "
                                             rf"{re.escape(str(tmp_path))} --lmdb")
    elif case == 'lmdb not ending in .lmdb':
        train.update(dataroot_lq=clean_folder, dataroot_gt=clean_folder)
        error, message = ValueError, r'datasets.train.dataroot_gt: .* must be an LMDB folder ending in .lmdb'
    else:
        train.update(dataroot_lq=str(tmp_path / 'no_such_folder'), dataroot_gt=clean_folder,
                     io_backend={'type': 'disk'})
        error, message = FileNotFoundError, r"datasets.train.dataroot_lq: '.*no_such_folder' does not exist"
    opt['datasets']['train'] = train
    with pytest.raises(error, match=message):
        SpikingSRModel.launch_checks(parsed(tmp_path, opt))


@pytest.fixture
def mismatched_pairs(tmp_path):
    """Paired folders where pair 001 has a 40x40 LQ for a 48x48 GT, and pair 002 a 40x40 GT for a 48x48 LQ."""
    lq_dir, gt_dir = write_noisy_pairs(str(tmp_path / 'pairs'), photo_crops(48, 1)[:3])
    for folder, name in ((lq_dir, '001.png'), (gt_dir, '002.png')):
        img = cv2.imread(os.path.join(folder, name))
        cv2.imwrite(os.path.join(folder, name), img[:40, :40])
    return lq_dir, gt_dir


def _paired_opt(lq_dir, gt_dir, phase):
    opt = {'name': 'pairs', 'type': 'PairedImageDataset', 'dataroot_lq': lq_dir, 'dataroot_gt': gt_dir,
           'io_backend': {'type': 'disk'}, 'phase': phase, 'scale': 1, 'filename_tmpl': '{}'}
    if phase == 'train':
        opt.update(gt_size=32, use_hflip=False, use_rot=False)
    return opt


def test_basicsr_datasets_keep_their_own_size_errors(mismatched_pairs):
    """A guest: basicsr's PairedImageDataset (used by runs without the plugin's models) is left as it is; the
    plugin's runs find the pair at launch (next test)."""
    lq_dir, gt_dir = mismatched_pairs
    dataset = build_dataset(_paired_opt(lq_dir, gt_dir, 'train'))
    assert type(dataset).__module__ == 'basicsr.data.paired_image_dataset'
    assert dataset[0]['lq'].shape == (3, 32, 32)
    with pytest.raises(ValueError, match='Scale mismatches') as plain:
        dataset[1]
    assert '001.png' not in str(plain.value)


def test_paired_size_mismatch_in_a_plugin_run_names_the_pair(tmp_path, mismatched_pairs):
    lq_dir, gt_dir = mismatched_pairs
    opt = run_options('pairs', lq_dir)
    opt['datasets']['train'] = dict(_paired_opt(lq_dir, gt_dir, 'train'), batch_size_per_gpu=1,
                                    num_worker_per_gpu=0, use_shuffle=False, prefetch_mode=None)
    with pytest.raises(ValueError, match=r"datasets.train \('pairs'\): LQ '.*(00[12]).png' is 40x40 and GT '.*\1.png' "
                                         r'is 48x48, but each GT must be exactly scale \(1\) times its LQ'):
        pipeline(tmp_path, opt)  # found at launch, from the image headers
    assert not (tmp_path / 'experiments').exists()


def test_paired_size_mismatch_in_validation_names_the_pair(tmp_path, mismatched_pairs):
    lq_dir, gt_dir = mismatched_pairs
    model = build_model(model_opt(tmp_path))
    loader = torch.utils.data.DataLoader(build_dataset(dict(_paired_opt(lq_dir, gt_dir, 'val'))), batch_size=1)
    with pytest.raises(ValueError, match=rf"LQ '{re.escape(lq_dir)}/002.png' and GT '{re.escape(gt_dir)}/002.png' do "
                                         r'not match in size \(LQ \(48, 48\), GT \(40, 40\), scale 1\)'):
        model.validation(loader, 1, None, save_img=False)


# ================================================================== 4. resume never loses or hides work
RESUME_DAMAGE = [  # (file to damage, how, state the run resumes from, reason named)
    ('training_states/6.state', lambda p: p.write_bytes(b''), 4, r'6.state \(empty \(0 bytes\)\)'),
    ('models/net_g_6.pth', lambda p: p.write_bytes(_damaged(p.read_bytes())), 4,
     r'net_g_6.pth \(damaged torch archive\)'),
    ('models/net_g_6.pth', lambda p: p.unlink(), 4, r'net_g_6.pth \(missing\)'),
]


@pytest.mark.parametrize('name, damage, resumed, reason', RESUME_DAMAGE, ids=['empty-state', 'damaged-weights',
                                                                              'missing-weights'])
def test_auto_resume_skips_a_damaged_newest_pair(tmp_path, run_copy, clean_folder, capsys, name, damage, resumed,
                                                 reason):
    exp, before = run_copy
    damage(exp / name)
    opt = parsed(tmp_path, run_options('tiny', clean_folder), '--auto_resume')
    state = launch.resume_state_of(opt)
    assert state['iter'] == resumed and opt['path']['resume_state'].endswith(f'{resumed}.state')
    assert opt['path']['pretrain_network_g'].endswith(f'net_g_{resumed}.pth')
    err = capsys.readouterr().err
    assert 'WARNING (spikerir-plugin): --auto_resume skipped damaged checkpoints' in err
    assert re.search(reason, err) and f'Resuming from {exp}/training_states/{resumed}.state' in err
    after = tree_hashes(exp)
    assert {k: v for k, v in after.items() if k != name} == {k: v for k, v in before.items() if k != name}


def test_auto_resume_with_every_state_damaged_refuses_to_start_over(tmp_path, run_copy, clean_folder):
    exp, _ = run_copy
    for state in glob.glob(str(exp / 'training_states' / '*.state')):
        with open(state, 'r+b') as f:
            f.truncate(100)
    before = tree_hashes(exp)
    opt = parsed(tmp_path, run_options('tiny', clean_folder), '--auto_resume')
    with pytest.raises(CheckpointError, match=r'--auto_resume: no training state in .* can be loaded: .*6.state '
                                              r'\(damaged torch archive\); .*2.state .*Nothing was changed.*move the '
                                              r'damaged'):
        launch.resume_state_of(opt)
    assert tree_hashes(exp) == before


EXPLICIT = [  # (what path.resume_state points at / damage, error, message)
    ('damaged state', CheckpointError, r"path.resume_state: training state '.*6.state' is a damaged torch archive.*"
                                       r'Point path.resume_state at an earlier state.*--auto_resume'),
    ('damaged weights', CheckpointError, r'path.pretrain_network_g \(set from path.resume_state\): weights saved with '
                                         r"that training state '.*net_g_6.pth' is empty.*resumes into"),
    ('weights file as state', CheckpointError, r"path.resume_state: '.*net_g_4.pth' is not a training state \(it "
                                               r'holds params, params_ema\)'),
]


@pytest.mark.parametrize('case, error, message', EXPLICIT, ids=[e[0] for e in EXPLICIT])
def test_explicit_resume_state_faults_name_the_option(tmp_path, run_copy, clean_folder, case, error, message):
    exp, _ = run_copy
    target = exp / 'training_states' / '6.state'
    if case == 'damaged state':
        target.write_bytes(_damaged(target.read_bytes()))
    elif case == 'damaged weights':
        (exp / 'models' / 'net_g_6.pth').write_bytes(b'')
    else:
        target = exp / 'models' / 'net_g_4.pth'
    before = tree_hashes(exp)
    opt = run_options('tiny', clean_folder)
    opt['path']['resume_state'] = str(target)
    with pytest.raises(error, match=message):
        launch.resume_state_of(parsed(tmp_path, opt))
    assert tree_hashes(exp) == before


def test_typo_in_a_rerun_is_caught_before_the_finished_run_is_moved(tmp_path, run_copy, clean_folder):
    exp, before = run_copy
    opt = run_options('tiny', clean_folder)
    opt['network_g']['type'] = 'SpikerRI'
    with pytest.raises(KeyError, match=r"network_g.type: unknown arch 'SpikerRI'"):
        pipeline(tmp_path, opt)
    assert not glob.glob(f'{exp}_archived_*') and tree_hashes(exp) == before


def test_archived_run_is_announced_and_auto_resume_says_how_to_get_it_back(tmp_path, run_copy, clean_folder, capfd):
    exp, before = run_copy
    opt = run_options('tiny', clean_folder)
    opt['train']['optim_g']['type'] = 'Lion'  # an error found only when the model is built: after the move
    with pytest.raises(ValueError, match="unknown optimizer 'Lion'"):
        pipeline(tmp_path, opt)
    err = capfd.readouterr().err
    assert f'{exp} holds a finished training run (training states up to iteration 6)' in err
    assert 'basicsr moves that folder to' in err and 'run again with --auto_resume' in err
    archived = glob.glob(f'{exp}_archived_*')
    assert len(archived) == 1 and tree_hashes(archived[0]) == before  # moved, not changed
    # --auto_resume does not start at iteration 0 next to the archived run: it says how to move it back
    root, moved = re.escape(str(exp)), re.escape(archived[0])
    with pytest.raises(ResumeError, match=rf'--auto_resume found no training state in {root}, but {moved} holds '
                                          rf"this experiment's run up to iteration 6.*mv {root} {root}_empty && mv "
                                          rf'{moved} {root}, then run again with --auto_resume'):
        launch.resume_state_of(parsed(tmp_path, run_options('tiny', clean_folder), '--auto_resume'))
    os.rename(exp, f'{exp}_empty')  # the command the error gives
    os.rename(archived[0], exp)
    state = launch.resume_state_of(parsed(tmp_path, run_options('tiny', clean_folder), '--auto_resume'))
    assert state['iter'] == 6 and tree_hashes(exp) == before


def test_auto_resume_refuses_to_continue_a_rerun_shorter_than_the_archived_run(tmp_path, run_copy, clean_folder,
                                                                                capfd):
    """The run reached 6; a rerun without --auto_resume moved it aside and stopped after saving 2.state. A later
    --auto_resume must not silently continue the rerun at 2: it names both runs and both ways out, which work."""
    exp, before = run_copy
    pipeline(tmp_path, run_options('tiny', clean_folder, total_iter=2))  # the rerun, stopped at its 2.state
    err = capfd.readouterr().err
    assert 'until this run reaches iteration 6, --auto_resume stops and prints the commands that move the archived ' \
           'run back' in err
    archived = glob.glob(f'{exp}_archived_*')
    assert len(archived) == 1 and tree_hashes(archived[0]) == before
    rerun = tree_hashes(exp)
    state = str(exp / 'training_states' / '2.state')
    root, moved = re.escape(str(exp)), re.escape(archived[0])
    with pytest.raises(ResumeError) as refused:
        launch.resume_state_of(parsed(tmp_path, run_options('tiny', clean_folder), '--auto_resume'))
    message = str(refused.value)
    assert re.search(rf'--auto_resume would continue {root} from iteration 2 \({re.escape(state)}\), but {moved} '
                     'holds a longer run of this experiment, up to iteration 6', message), message
    assert f'--force_yml path:resume_state={state}' in message, message
    assert tree_hashes(exp) == rerun and tree_hashes(archived[0]) == before  # nothing moved or changed
    # way out 1: continue the rerun anyway, from its state given explicitly (the --force_yml the error gives)
    resumed = launch.resume_state_of(parsed(tmp_path, run_options('tiny', clean_folder), '--force_yml',
                                                       f'path:resume_state={state}'))
    assert resumed['iter'] == 2
    # way out 2: the commands that bring the archived run back; --auto_resume then continues it at 6
    swap = re.search(rf'To continue the archived run: mv {root} (\S+) && mv {moved} {root}, then run again with '
                     '--auto_resume', message)
    assert swap, message
    os.rename(exp, swap.group(1))
    os.rename(archived[0], exp)
    resumed = launch.resume_state_of(parsed(tmp_path, run_options('tiny', clean_folder), '--auto_resume'))
    assert resumed['iter'] == 6 and tree_hashes(exp) == before and tree_hashes(swap.group(1)) == rerun
    assert swap.group(1) in glob.glob(f'{exp}_archived_*')  # the rerun is kept where --auto_resume can name it


def test_each_rank_resumes_its_own_random_streams_or_says_which_continue(tmp_path, run_copy, clean_folder, capfd):
    exp, _ = run_copy
    path = exp / 'training_states' / '6.state'
    saved = torch.load(path, weights_only=True)
    assert len(saved['rng_ranks']) == 1 and saved['rng_ranks'][0]['python'] == saved['rng']['python']
    two = [saved['rng'], {**saved['rng'], 'python': (3, tuple(range(624)) + (0,), None)}]  # rank 1: another stream
    torch.save({**saved, 'rng_ranks': two}, path)

    def resume(rank, world):
        opt = parsed(tmp_path, run_options('tiny', clean_folder), '--auto_resume')
        opt['rank'], opt['world_size'] = rank, world  # what basicsr's parse_options sets in a DDP process
        state = launch.resume_state_of(opt)
        return state.get('rng'), capfd.readouterr().err

    for rank in (0, 1):  # as many processes as the saved run: each rank its own entry, no notice
        rng, err = resume(rank, 2)
        assert rng['python'] == two[rank]['python'] and 'random streams' not in err
    rng, err = resume(0, 1)  # another number of processes: rank 0 continues rank 0's streams, and says so
    assert rng['python'] == two[0]['python']
    assert f'{path} was saved by 2 process(es) and this run has 1' in err and 'not exact' in err
    del saved['rng_ranks']  # a state of an earlier version: rank 0's streams only
    torch.save(saved, path)
    assert 'random streams' not in resume(0, 1)[1]  # single process: exact as before
    for rank in (0, 1):
        rng, err = resume(rank, 2)
        assert (rng is None) == (rank == 1)  # rank 1 keeps its seeded streams
    assert "holds only rank 0's random streams" in resume(0, 2)[1]


def test_resume_removes_partial_files_of_killed_writes(tmp_path, run_copy, clean_folder, capsys):
    exp, before = run_copy
    partial = exp / 'models' / '.net_g_8.pth.k3j2l1x_.tmp'
    partial.write_bytes(b'PK\x03\x04 half of a checkpoint')
    state = launch.resume_state_of(parsed(tmp_path, run_options('tiny', clean_folder), '--auto_resume'))
    assert state['iter'] == 6 and not partial.exists() and tree_hashes(exp) == before
    assert 'removed 1 partial file(s) left by writes that were cut off: .net_g_8.pth.k3j2l1x_.tmp' in \
        capsys.readouterr().err


def test_resume_from_the_newest_loadable_pair_ends_where_the_uninterrupted_run_did(tmp_path, run_copy,
                                                                                   clean_folder, finished_run):
    exp, before = run_copy
    (exp / 'training_states' / '6.state').write_bytes(b'')  # the newest state was lost
    pipeline(tmp_path, run_options('tiny', clean_folder), '--auto_resume')
    for name in ('net_g_6.pth', 'net_g_latest.pth'):
        a = read_checkpoint(str(finished_run / 'models' / name))
        b = read_checkpoint(str(exp / 'models' / name))
        for key in ('params', 'params_ema'):
            diff = max((a[key][k].double() - b[key][k].double()).abs().max().item() for k in a[key])
            assert diff == 0, (name, key, diff)
    after = tree_hashes(exp)
    for name in ('models/net_g_2.pth', 'models/net_g_4.pth', 'training_states/2.state', 'training_states/4.state'):
        assert after[name] == before[name], name
    assert read_checkpoint(str(exp / 'training_states' / '6.state'))['iter'] == 6  # written again, complete


# ================================================================== 5. atomic writes
def _failing_rename(monkeypatch):
    import spikerir_plugin.utils.atomic as atomic

    def refuse(src, dst):
        raise OSError(28, 'No space left on device (injected)')
    monkeypatch.setattr(atomic.os, 'replace', refuse)


def _no_partial_files(folder):
    return not glob.glob(os.path.join(folder, '**', '.*.tmp'), recursive=True)


def test_killed_weight_write_leaves_the_previous_file_and_resume_cleans_up(tmp_path, run_copy, clean_folder):
    """SIGKILL inside the write of net_g_6.pth (in a forked writer): the old file keeps its hash."""
    exp, before = run_copy
    target = exp / 'models' / 'net_g_6.pth'
    pid = os.fork()
    if pid == 0:  # the writer: dies between writing the temporary file and renaming it
        import spikerir_plugin.utils.atomic as atomic
        atomic.os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
        atomic.atomic_torch_save({'params': {'w': torch.zeros(3)}}, str(target))
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert sha256(target) == before['models/net_g_6.pth'] and not _no_partial_files(exp)
    state = launch.resume_state_of(parsed(tmp_path, run_options('tiny', clean_folder), '--auto_resume'))
    assert state['iter'] == 6 and _no_partial_files(exp) and tree_hashes(exp) == before


class OneImage(torch.utils.data.Dataset):
    opt = {'name': 'one'}

    def __len__(self):
        return 1

    def __getitem__(self, index):
        img = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(index))
        return {'lq': img, 'gt': img, 'lq_path': 'img.png'}


def test_model_checkpoints_and_validation_images_are_written_atomically(tmp_path, monkeypatch):
    import basicsr.utils
    from basicsr.models.sr_model import SRModel
    opt = model_opt(tmp_path, is_train=True)
    opt['val']['save_img'] = True
    model = build_model(opt)
    loader = torch.utils.data.DataLoader(OneImage(), batch_size=1)
    model.save(0, 2)
    model.validation(loader, 2, None, save_img=True)
    png = tmp_path / 'vis' / 'img' / 'img_2.png'
    files = [tmp_path / 'net_g_2.pth', tmp_path / '2.state', png]
    before = [sha256(f) for f in files]
    _failing_rename(monkeypatch)
    model.net_g.output.bias.data.add_(1.0)  # different content this time
    for write in (lambda: model.save(0, 2), lambda: model.validation(loader, 2, None, save_img=True)):
        with pytest.raises(OSError, match='injected'):
            write()
    assert [sha256(f) for f in files] == before and _no_partial_files(tmp_path)
    # basicsr's SRModel (runs without the plugin) keeps its own writer
    assert SRModel.nondist_validation.__globals__['imwrite'] is basicsr.utils.imwrite


@pytest.mark.parametrize('umask', [0o022, 0o077, 0o002])
def test_written_files_get_the_permissions_of_the_users_umask(tmp_path, umask):
    """Checkpoints, training states, validation images and reports get what open() gives under the umask (as
    basicsr's own files), not mkstemp's 0600."""
    from spikerir_plugin.utils.atomic import atomic_write_text
    old = os.umask(umask)
    try:
        opt = model_opt(tmp_path, is_train=True)
        model = build_model(opt)
        model.save(0, 2)
        model.validation(torch.utils.data.DataLoader(OneImage(), batch_size=1), 2, None, save_img=True)
        atomic_write_text(str(tmp_path / 'report.csv'), 'a,b\n')
        with open(tmp_path / 'plain.txt', 'w') as f:  # what any other program writes here
            f.write('x')
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    assert os.stat(tmp_path / 'plain.txt').st_mode & 0o777 == expected
    for name in ('net_g_2.pth', '2.state', 'report.csv', os.path.join('vis', 'img', 'img_2.png')):
        assert os.stat(tmp_path / name).st_mode & 0o777 == expected, (name, oct(umask))


def test_energy_report_and_demo_files_are_written_atomically(tmp_path, monkeypatch):
    from spikerir_plugin import demo
    from spikerir_plugin.tools import energy_report
    opt_file = tmp_path / 'net.yml'
    opt_file.write_text(yaml.safe_dump({'name': 'tiny', 'network_g': dict(STUDENT)}))
    out = tmp_path / 'energy'
    args = ['-opt', str(opt_file), '--size', '16', '--out', str(out)]
    assert energy_report.main(args) == 0
    yml = demo.write_yaml(str(tmp_path / 'demo.yml'), {'name': 'a'})
    crops = demo.write_demo_images(str(tmp_path / 'crops'), ('camera',), 32, 1)
    written = sorted(glob.glob(str(out / '*'))) + [yml] + glob.glob(os.path.join(crops, '*'))
    assert len(written) == 5
    before = [sha256(f) for f in written]
    _failing_rename(monkeypatch)
    for write in (lambda: energy_report.main(args + ['--sigma', '10']), lambda: demo.write_yaml(yml, {'name': 'b'}),
                  lambda: demo.write_demo_images(crops, ('camera',), 24, 1)):
        with pytest.raises(OSError, match='injected'):
            write()
    assert [sha256(f) for f in written] == before and _no_partial_files(tmp_path)


# ================================================================== 6. kill -9 and resume, a few cycles (CI soak)
def test_short_kill_and_resume_soak(tmp_path):
    """benchmarks/resume_soak.py with 3 kill cycles (children forked from this process, as the benchmark does):
    the final weights equal the uninterrupted run's, no checkpoint is lost or unreadable."""
    sys.path.insert(0, os.path.join(REPO_ROOT, 'benchmarks'))
    threads = torch.get_num_threads()
    try:
        import resume_soak
        lines = []
        figures = resume_soak.run_soak(str(tmp_path), cycles=3, total_iter=8, save_freq=2, seed=1, log=lines.append)
    finally:
        sys.path.remove(os.path.join(REPO_ROOT, 'benchmarks'))
        torch.set_num_threads(threads)
    assert figures['kills'] + figures['runs_finished_before_kill'] == figures['cycles'] <= 3, lines
    assert figures['kills'] >= 1 and figures['final_weights_equal'], lines
    assert figures['lost_files'] == figures['unreadable_files'] == figures['changed_files'] == 0, lines
    assert figures['compared_checkpoints'] == 5 and figures['mismatched_iterations'] == 0, lines  # 2/4/6/8, latest
