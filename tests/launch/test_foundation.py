"""Foundation: compat shims, registration, BasicSR's train pipeline on CPU (train, checkpoints, resume), gloo DDP
through torchrun, and the literal `python basicsr/train.py` command from a BasicSR-style checkout."""
import glob
import os
import shutil
import socket
import subprocess

import pytest
import torch
import yaml

from conftest import PYTHON, REPO_ROOT, subprocess_env

TRAIN_SCRIPT = os.path.join(REPO_ROOT, 'spikerir_plugin', 'train.py')


def tiny_train_options(name, pairs, total_iter=10, save_freq=5, val_freq=5, network=None,
                       model_type='SpikingSRModel'):
    """Options for a seconds-long CPU run: 8 training pairs, batch 2 -> 4 iterations per epoch, random 32x32 crops,
    flips and rotations (so an exact resume must restore the random streams too)."""
    return {
        'name': name, 'model_type': model_type, 'scale': 1, 'num_gpu': 'auto', 'manual_seed': 7,
        'datasets': {
            'train': {'name': 'tiny', 'type': 'PairedImageDataset', 'dataroot_gt': pairs['train_gt'],
                      'dataroot_lq': pairs['train_lq'], 'filename_tmpl': '{}', 'io_backend': {'type': 'disk'},
                      'gt_size': 32, 'use_hflip': True, 'use_rot': True, 'num_worker_per_gpu': 0,
                      'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 1, 'prefetch_mode': None},
            'val': {'name': 'tiny_val', 'type': 'PairedImageDataset', 'dataroot_gt': pairs['val_gt'],
                    'dataroot_lq': pairs['val_lq'], 'io_backend': {'type': 'disk'}},
        },
        'network_g': network or {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'scale': 1, 'num_feat': 8,
                                 'num_block': 1, 'num_grow_ch': 4},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-3},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [1000], 'gamma': 0.5},
                  'total_iter': total_iter, 'warmup_iter': -1,
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}},
        'val': {'val_freq': val_freq, 'save_img': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}}},
        'logger': {'print_freq': 5, 'save_checkpoint_freq': save_freq, 'use_tb_logger': False},
        'dist_params': {'backend': 'gloo', 'port': 29500},
    }


def write_options(path, opt):
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return str(path)


def run(cmd, cwd, env=None, timeout=300):
    proc = subprocess.run(cmd, cwd=cwd, env=env or subprocess_env(), capture_output=True, text=True,
                          timeout=timeout)
    return proc


def assert_ok(proc):
    assert proc.returncode == 0, f'exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-4000:]}\nSTDERR:\n{proc.stderr[-4000:]}'


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def load_params(path):
    return torch.load(path, map_location='cpu', weights_only=True)['params']


# --------------------------------------------------------------------------------------------- compat + registry

def test_registries_hold_plugin_names_once():
    import spikerir_plugin  # noqa: F401
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY
    expected = {ARCH_REGISTRY: ['ESDNet', 'SpikerIR', 'SPIDEN', 'NAFNet', 'Restormer'],
                MODEL_REGISTRY: ['SpikingSRModel', 'SpikerIRDistillModel'],
                LOSS_REGISTRY: ['FFTLoss', 'HintLoss', 'PSNRLoss'],
                DATASET_REGISTRY: ['GaussianDenoiseDataset']}
    for registry, names in expected.items():
        for name in names:
            assert name in registry, f'{name} missing from the {registry._name} registry'
            assert registry.get(name).__module__.startswith('spikerir_plugin.'), name
    # importing again (and through the startup hook in a fresh process) must not register twice
    proc = run([PYTHON, '-c', 'import basicsr, spikerir_plugin, importlib; importlib.import_module("spikerir_plugin")'
                '; from basicsr.utils.registry import ARCH_REGISTRY; print(sorted(ARCH_REGISTRY._obj_map))'],
               cwd=REPO_ROOT)
    assert_ok(proc)
    assert 'SpikerIR' in proc.stdout


def test_import_shims_and_argv_rewrite():
    import spikerir_compat
    from spikerir_plugin import launch
    from torchvision.transforms.functional_tensor import rgb_to_grayscale  # the name basicsr imports
    assert callable(rgb_to_grayscale)
    assert launch.rewrite_local_rank_argv(['train.py', '--local-rank=1', '-opt', 'x.yml']) == \
        ['train.py', '--local_rank=1', '-opt', 'x.yml']
    assert launch.rewrite_local_rank_argv(['--local-rank', '0', '--local-rank-file', 'f']) == \
        ['--local_rank', '0', '--local-rank-file', 'f']  # only that option, not a prefix
    assert not hasattr(spikerir_compat, 'patch_runtime')  # the shims module holds module aliases only
    LooseVersion = spikerir_compat._LooseVersion
    assert LooseVersion('0.29.1') >= LooseVersion('0.9.0')
    assert LooseVersion('0.8.2') < '0.9'
    assert not LooseVersion('1.10') < LooseVersion('1.9')


def test_startup_hook_is_free_optional_and_never_raises(tmp_path):
    # interpreter start: neither torch nor basicsr is imported by the hook
    proc = run([PYTHON, '-c', 'import sys; print("torch" in sys.modules, "basicsr" in sys.modules)'], cwd=tmp_path)
    assert_ok(proc)
    assert proc.stdout.split() == ['False', 'False']
    # basicsr alone (no explicit plugin import) sees the plugin's names thanks to the hook
    code = 'import basicsr; from basicsr.utils.registry import ARCH_REGISTRY; print("SpikerIR" in ARCH_REGISTRY)'
    proc = run([PYTHON, '-c', code], cwd=tmp_path)
    assert_ok(proc)
    assert proc.stdout.strip() == 'True'
    # opt-out: the hook does nothing, so basicsr 1.4.2's own import error comes back
    proc = run([PYTHON, '-c', code], cwd=tmp_path, env=subprocess_env(SPIKERIR_NO_AUTOLOAD='1'))
    assert proc.returncode != 0 and 'functional_tensor' in proc.stderr
    # a broken plugin import is reported on stderr, and the program still runs
    broken = tmp_path / 'shadow' / 'spikerir_plugin'
    broken.mkdir(parents=True)
    (broken / '__init__.py').write_text('raise RuntimeError("deliberately broken")\n')
    env = subprocess_env()
    env['PYTHONPATH'] = str(tmp_path / 'shadow') + os.pathsep + env['PYTHONPATH']
    proc = run([PYTHON, '-c', 'import basicsr; print("still running")'], cwd=tmp_path, env=env)
    assert_ok(proc)
    assert 'still running' in proc.stdout
    assert 'autoload failed' in proc.stderr and 'deliberately broken' in proc.stderr


# --------------------------------------------------------------------------------------------- pipeline on CPU

@pytest.mark.parametrize('stop_at, prefetch', [(6, None), (8, None)], ids=['mid-epoch', 'epoch-boundary'])
def test_train_writes_checkpoints_and_resume_continues_exactly(tmp_path, tiny_pairs, stop_at, prefetch):
    # uninterrupted reference run: 12 iterations
    ref_opt = tiny_train_options('ref', tiny_pairs, total_iter=12, save_freq=2)
    ref_opt['datasets']['train']['prefetch_mode'] = prefetch
    ref = write_options(tmp_path / 'ref.yml', ref_opt)
    assert_ok(run([PYTHON, TRAIN_SCRIPT, '-opt', ref], cwd=tmp_path))
    # interrupted run, then auto-resume up to 12
    opt = tiny_train_options('resumed', tiny_pairs, total_iter=stop_at, save_freq=2)
    opt['datasets']['train']['prefetch_mode'] = prefetch
    first = write_options(tmp_path / 'first.yml', opt)
    assert_ok(run([PYTHON, TRAIN_SCRIPT, '-opt', first], cwd=tmp_path))
    exp = tmp_path / 'experiments' / 'resumed'
    for f in (f'models/net_g_{stop_at}.pth', 'models/net_g_latest.pth', f'training_states/{stop_at}.state'):
        assert (exp / f).is_file(), f
    opt['train']['total_iter'] = 12
    second = write_options(tmp_path / 'second.yml', opt)
    proc = run([PYTHON, TRAIN_SCRIPT, '-opt', second, '--auto_resume'], cwd=tmp_path)
    assert_ok(proc)
    log = '\n'.join(open(p).read() for p in glob.glob(str(exp / 'train_resumed_*.log')))
    assert f'Resuming training from epoch: {stop_at // 4}, iter: {stop_at}' in log
    assert (exp / 'models' / 'net_g_12.pth').is_file()
    assert not (exp / 'models' / 'net_g_14.pth').exists()
    a = load_params(tmp_path / 'experiments' / 'ref' / 'models' / 'net_g_12.pth')
    b = load_params(exp / 'models' / 'net_g_12.pth')
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.parametrize('persistent', [False, True], ids=['workers', 'persistent-workers'])
def test_mid_epoch_resume_with_loader_workers_skips_the_consumed_batches(tmp_path, tiny_pairs, persistent):
    """With DataLoader workers basicsr's first (discarded) prefetcher iterator already draws sampler indices, so the
    skip must apply to the resumed epoch's loader. Whole-image crops and no flips make the worker-side randomness
    irrelevant (worker random streams are not part of a training state): the data order alone decides the result."""
    def options(name, total_iter):
        opt = tiny_train_options(name, tiny_pairs, total_iter=total_iter, save_freq=2)
        opt['datasets']['train'].update(num_worker_per_gpu=2, gt_size=48, use_hflip=False, use_rot=False,
                                        persistent_workers=persistent)
        return opt

    assert_ok(run([PYTHON, TRAIN_SCRIPT, '-opt', write_options(tmp_path / 'ref.yml', options('ref', 8))], cwd=tmp_path))
    assert_ok(run([PYTHON, TRAIN_SCRIPT, '-opt', write_options(tmp_path / 'a.yml', options('res', 6))], cwd=tmp_path))
    proc = run([PYTHON, TRAIN_SCRIPT, '-opt', write_options(tmp_path / 'b.yml', options('res', 8)), '--auto_resume'],
               cwd=tmp_path)
    assert_ok(proc)
    log = '\n'.join(open(p).read() for p in glob.glob(str(tmp_path / 'experiments' / 'res' / 'train_res_*.log')))
    assert 'Resume at iter 6: epoch 1, skipping 2 consumed batches.' in log
    a = load_params(tmp_path / 'experiments' / 'ref' / 'models' / 'net_g_8.pth')
    b = load_params(tmp_path / 'experiments' / 'res' / 'models' / 'net_g_8.pth')
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_resume_from_missing_state_names_the_file(tmp_path, tiny_pairs):
    opt = tiny_train_options('missing', tiny_pairs)
    opt['path']['resume_state'] = str(tmp_path / 'nope' / '10.state')
    proc = run([PYTHON, TRAIN_SCRIPT, '-opt', write_options(tmp_path / 'o.yml', opt)], cwd=tmp_path)
    assert proc.returncode != 0
    assert 'resume_state' in proc.stderr and '10.state' in proc.stderr


def test_torchrun_two_process_gloo_ddp_trains_and_validates(tmp_path, tiny_pairs):
    opt = tiny_train_options('ddp', tiny_pairs, total_iter=4, save_freq=4, val_freq=2)
    opt['datasets']['train']['batch_size_per_gpu'] = 1
    yml = write_options(tmp_path / 'ddp.yml', opt)
    cmd = [PYTHON, '-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={free_port()}',
           TRAIN_SCRIPT, '-opt', yml, '--launcher', 'pytorch']
    proc = run(cmd, cwd=tmp_path, timeout=420)
    assert_ok(proc)
    exp = tmp_path / 'experiments' / 'ddp'
    log = '\n'.join(open(p).read() for p in glob.glob(str(exp / 'train_ddp_*.log')))
    assert 'World size (gpu number): 2' in log
    assert log.count('# psnr:') >= 2  # validated at iterations 2 and 4 (+ the final one)
    assert (exp / 'models' / 'net_g_4.pth').is_file() and (exp / 'training_states' / '4.state').is_file()


def test_torchrun_two_process_resume_continues_every_rank_exactly(tmp_path, tiny_pairs):
    """2-process gloo run killed right after saving iteration 6 (mid-epoch: 4 batches of 1 per rank and epoch),
    resumed with --auto_resume to 12: the same weights and every rank's random streams as an uninterrupted
    12-iteration run. Each rank crops and flips with its own stream (seed + rank), so rank 1's must be saved too;
    rank 0 validates right after saving 6, which must not draw from the streams the training continues with."""
    def torchrun(name, *flags):
        opt = tiny_train_options(name, tiny_pairs, total_iter=12, save_freq=6, val_freq=6)
        opt['datasets']['train']['batch_size_per_gpu'] = 1
        yml = write_options(tmp_path / f'{name}.yml', opt)
        assert_ok(run([PYTHON, '-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={free_port()}',
                       TRAIN_SCRIPT, '-opt', yml, '--launcher', 'pytorch', *flags], cwd=tmp_path, timeout=420))

    torchrun('ref')  # uninterrupted, saving at 6 and 12
    ref, res = tmp_path / 'experiments' / 'ref', tmp_path / 'experiments' / 'res'
    # the folder a SIGKILL right after 6.state would leave: everything the run wrote after it removed
    shutil.copytree(ref / 'training_states', res / 'training_states')
    shutil.copytree(ref / 'models', res / 'models')
    for f in ('training_states/12.state', 'models/net_g_12.pth', 'models/net_g_latest.pth'):
        os.remove(res / f)
    torchrun('res', '--auto_resume')
    log = '\n'.join(open(p).read() for p in glob.glob(str(res / 'train_res_*.log')))
    assert 'Resume at iter 6: epoch 1, skipping 2 consumed batches.' in log
    a, b = load_params(ref / 'models' / 'net_g_12.pth'), load_params(res / 'models' / 'net_g_12.pth')
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    a, b = (torch.load(d / 'training_states' / '12.state', weights_only=True)['rng_ranks'] for d in (ref, res))
    assert len(a) == len(b) == 2 and a[0]['python'] != a[1]['python']  # two ranks, two streams
    for rank in range(2):
        assert a[rank]['python'] == b[rank]['python'], rank
        assert torch.equal(a[rank]['torch'], b[rank]['torch']), rank
        assert torch.equal(a[rank]['numpy'][1], b[rank]['numpy'][1]) and a[rank]['numpy'][2:] == b[rank]['numpy'][2:]


def test_literal_basicsr_train_command_from_a_checkout(tmp_path, tiny_pairs):
    """`python basicsr/train.py -opt options/X.yml` run from a BasicSR checkout: basicsr's own script, with a
    plugin-only arch in the options, must train through the startup hook alone."""
    import basicsr
    checkout = tmp_path / 'BasicSR'
    (checkout / 'basicsr').mkdir(parents=True)
    (checkout / 'options').mkdir()
    shutil.copy(os.path.join(os.path.dirname(basicsr.__file__), 'train.py'), checkout / 'basicsr' / 'train.py')
    net = {'type': 'NAFNet', 'img_channel': 3, 'width': 8, 'middle_blk_num': 1, 'enc_blk_nums': [1, 1],
           'dec_blk_nums': [1, 1]}
    opt = tiny_train_options('literal', tiny_pairs, total_iter=2, save_freq=2, val_freq=2, network=net)
    opt['datasets']['train']['dataroot_gt'] = os.path.relpath(tiny_pairs['train_gt'], checkout)  # cwd-relative
    opt['datasets']['train']['dataroot_lq'] = os.path.relpath(tiny_pairs['train_lq'], checkout)
    write_options(checkout / 'options' / 'train_tiny.yml', opt)
    env = subprocess_env()
    env['PYTHONPATH'] = ''  # the checkout is not importable: basicsr comes from site-packages, the plugin via .pth
    proc = run([PYTHON, 'basicsr/train.py', '-opt', 'options/train_tiny.yml'], cwd=checkout, env=env)
    assert_ok(proc)
    assert (checkout / 'experiments' / 'literal' / 'models' / 'net_g_2.pth').is_file()
    # resume through basicsr's own script (run as __main__): the plugin model's exact resume is used there too
    opt['train']['total_iter'] = 4
    write_options(checkout / 'options' / 'train_tiny.yml', opt)
    proc = run([PYTHON, 'basicsr/train.py', '-opt', 'options/train_tiny.yml', '--auto_resume'], cwd=checkout, env=env)
    assert_ok(proc)
    log = '\n'.join(open(p).read() for p in glob.glob(str(checkout / 'experiments' / 'literal' / 'train_*.log')))
    assert 'Resume at iter 2: epoch 0, skipping 2 consumed batches.' in log
    assert (checkout / 'experiments' / 'literal' / 'models' / 'net_g_4.pth').is_file()
    env['SPIKERIR_NO_AUTOLOAD'] = '1'
    proc = run([PYTHON, 'basicsr/train.py', '-opt', 'options/train_tiny.yml'], cwd=checkout, env=env)
    assert proc.returncode != 0  # without the hook basicsr 1.4.2 cannot even be imported on this stack


def test_resume_keeps_the_frozen_teacher_checkpoint_and_param_key(tmp_path):
    """basicsr's check_resume points every network at net_<x>_<iter>.pth and turns param_key_* params_ema into
    params; a teacher is never saved by the run, so its path and key must survive (the resume part of the
    distillation model's hook; its launch checks need a complete run, see test_launch_checks.py)."""
    from spikerir_plugin.models import exact_resume
    from spikerir_plugin.models.spikerir_distill_model import SpikerIRDistillModel
    states = tmp_path / 'training_states'
    states.mkdir()
    torch.save({'iter': 20, 'epoch': 1, 'optimizers': [], 'schedulers': []}, states / '20.state')
    (tmp_path / 'models').mkdir()  # a state comes with its weights: resume reads the pair before using it
    torch.save({'params': {}}, tmp_path / 'models' / 'net_g_20.pth')
    opt = {'auto_resume': True, 'num_gpu': 0, 'rank': 0, 'model_type': 'SpikerIRDistillModel',
           'network_g': {'type': 'SpikerIR'}, 'network_t': {'type': 'NAFNet'},
           'path': {'training_states': str(states), 'models': str(tmp_path / 'models'),
                    'pretrain_network_g': None, 'param_key_g': 'params_ema',
                    'pretrain_network_t': 'teachers/nafnet.pth', 'param_key_t': 'params_ema'}}
    state = exact_resume.prepare_resume(opt, SpikerIRDistillModel.frozen_networks(opt))
    assert state['iter'] == 20 and opt['path']['resume_state'] == str(states / '20.state')
    assert opt['path']['ignore_resume_networks'] == ['network_t']
    assert opt['path']['pretrain_network_t'] == 'teachers/nafnet.pth' and opt['path']['param_key_t'] == 'params_ema'
    assert opt['path']['pretrain_network_g'].endswith('net_g_20.pth')  # the student does resume from its save
    assert opt['path']['param_key_g'] == 'params'


def test_the_resume_hooks_hand_over_through_the_options_they_share(tmp_path):
    """prepare_resume leaves its state and warnings in the options for resume_train_loader, which writes the warnings
    to the run's log and takes the handoff out before basicsr builds the model from the options; a second start of
    the same options does not see the first one's."""
    import logging

    from conftest import LogLines
    from spikerir_plugin.models import exact_resume
    states, models = tmp_path / 'run' / 'training_states', tmp_path / 'run' / 'models'
    states.mkdir(parents=True)
    models.mkdir()
    torch.save({'iter': 4, 'epoch': 0, 'optimizers': [], 'schedulers': []}, states / '4.state')
    opt = {'auto_resume': False, 'is_train': True, 'num_gpu': 0, 'rank': 0, 'network_g': {'type': 'SpikerIR'},
           'path': {'experiments_root': str(tmp_path / 'run'), 'training_states': str(states),
                    'models': str(models)}}
    assert exact_resume.prepare_resume(opt) is None  # a fresh start next to a run: a warning, no state
    logger, lines = logging.getLogger('spikerir.test_handoff'), LogLines()
    logger.addHandler(lines)
    try:
        assert exact_resume.resume_train_loader(opt, None, None, logger) == (None, None)
        assert len(lines.lines) == 1 and 'started without --auto_resume' in lines.lines[0]
        assert exact_resume.HANDOFF_KEY not in opt
        exact_resume.prepare_resume(opt)
        exact_resume.prepare_resume(opt)  # a second start: the first one's warning is not logged twice
        exact_resume.resume_train_loader(opt, None, None, logger)
        assert len(lines.lines) == 2
        torch.save({'params': {}}, models / 'net_g_4.pth')
        opt['auto_resume'] = True
        state = exact_resume.prepare_resume(opt)
        assert state['iter'] == 4 and opt[exact_resume.HANDOFF_KEY].state is state
        exact_resume.resume_train_loader(opt, None, None, logger)
        assert exact_resume.HANDOFF_KEY not in opt and len(lines.lines) == 2
    finally:
        logger.removeHandler(lines)


def test_basicsr_models_keep_basicsr_behaviour_with_the_plugin_installed(tmp_path, tiny_pairs):
    """A guest changes nothing for runs that do not use its models: an SRModel run trains through basicsr's own
    train_pipeline, BaseModel.save_training_state and EnlargedSampler, and writes basicsr's state layout."""
    import spikerir_plugin  # noqa: F401
    import basicsr.train
    from basicsr.data.data_sampler import EnlargedSampler
    from basicsr.models.base_model import BaseModel
    from basicsr.models.sr_model import SRModel
    assert BaseModel.save_training_state.__wrapped__.__module__ == 'basicsr.models.base_model'  # inside master_only
    assert BaseModel.resume_training.__module__ == 'basicsr.models.base_model'
    assert SRModel.__dict__.get('save') is not None and SRModel.save.__module__ == 'basicsr.models.sr_model'
    assert EnlargedSampler.__iter__.__module__ == EnlargedSampler.set_epoch.__module__ == 'basicsr.data.data_sampler'
    assert basicsr.train.train_pipeline.__module__ == 'basicsr.train'
    opt = tiny_train_options('plain', tiny_pairs, total_iter=6, save_freq=2, model_type='SRModel')
    yml = write_options(tmp_path / 'plain.yml', opt)
    assert_ok(run([PYTHON, TRAIN_SCRIPT, '-opt', yml], cwd=tmp_path))
    state = torch.load(tmp_path / 'experiments' / 'plain' / 'training_states' / '6.state', weights_only=True)
    assert set(state) == {'epoch', 'iter', 'optimizers', 'schedulers'}  # no plugin keys (rng, ...)
    # basicsr's own (epoch-restarting) resume, made to load on a CPU-only machine
    opt['train']['total_iter'] = 8
    proc = run([PYTHON, TRAIN_SCRIPT, '-opt', write_options(tmp_path / 'plain2.yml', opt), '--auto_resume'],
               cwd=tmp_path)
    assert_ok(proc)
    log = '\n'.join(open(p).read() for p in glob.glob(str(tmp_path / 'experiments' / 'plain' / 'train_*.log')))
    assert 'Resuming training from epoch: 1, iter: 6' in log and 'skipping' not in log
    assert (tmp_path / 'experiments' / 'plain' / 'models' / 'net_g_8.pth').is_file()


def test_in_process_train_options_build_a_model_that_writes_only_under_the_workdir(tmp_path):
    from basicsr.models import build_model
    import spikerir_plugin  # noqa: F401
    from spikerir_plugin.utils.options import in_process_train_options
    opt = {'name': 'inproc', 'model_type': 'SpikingSRModel', 'path': {'pretrain_network_g': None},
           'network_g': {'type': 'SpikerIR', 'preset': 'tiny', 'T': 2, 'reduction_t': 1},
           'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-3}, 'total_iter': 1, 'warmup_iter': -1,
                     'scheduler': {'type': 'MultiStepLR', 'milestones': [1], 'gamma': 0.5},
                     'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}}}
    work = tmp_path / 'work'
    work.mkdir()
    built = in_process_train_options(opt, str(work))
    assert 'is_train' not in opt and opt['path'] == {'pretrain_network_g': None}  # the input is left as it was
    model = build_model(built)
    model.feed_data({'lq': torch.rand(1, 3, 16, 16), 'gt': torch.rand(1, 3, 16, 16)})
    model.optimize_parameters(1)
    model.save(0, 1)
    assert sorted(os.listdir(work)) == ['1.state', 'net_g_1.pth']
