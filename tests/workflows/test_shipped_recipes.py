"""The shipped recipes end to end, as a user runs them from a BasicSR checkout.

For every task in options/, the shipped train files (step 1, the analog twin from the ANN teacher; step 2, the
spiking student from the twin) are changed only in size (iterations, crops, batch, workers, logging frequencies, the
width and depth of the ANN teachers and of ESDNet) and trained one after the other with `python basicsr/train.py`
in a BasicSR-style checkout; then the shipped test file runs through `python basicsr/test.py` and
`spikerir-restore -opt` on what training wrote. No path, name or model key is changed (checked below): the data,
LMDBs (written by the plugin's own preparation code) and teacher checkpoints are created exactly where the shipped
files look for them, so files of a recipe that do not find each other fail here.

The tasks run two at a time (each pipeline is a chain of subprocesses); each task is its own test.
"""
import concurrent.futures
import copy
import glob
import os
import shutil
import subprocess
import time

import cv2
import numpy as np
import pytest
import torch
import yaml

from conftest import PYTHON, REPO_ROOT, photo_crops, subprocess_env, write_noisy_pairs

OPTIONS = os.path.join(REPO_ROOT, 'options')
ITERS = 2  # total_iter, checkpoint and validation frequency of every shrunk run
CROP = 32  # training crops (gt_size) and the NAFNetLocal teacher's train_size
BATCH = 2
RESTORE_SIZE = (37, 45)  # H, W of the users' own images given to spikerir-restore: not a multiple of anything

# task -> the steps of its recipe, in order: (kind, shipped options file)
RECIPES = {
    'SIDD': [('train', 'train_SpikerIR_twin_SIDD.yml'), ('train', 'train_SpikerIR_SIDD.yml'),
             ('test', 'test_SpikerIR_SIDD.yml'), ('restore', 'test_SpikerIR_SIDD.yml')],
    'GoPro': [('train', 'train_SpikerIR_twin_GoPro.yml'), ('train', 'train_SpikerIR_GoPro.yml'),
              ('test', 'test_SpikerIR_GoPro.yml'), ('restore', 'test_SpikerIR_GoPro.yml')],
    'GaussianDenoise_sigma25': [('train', 'train_SpikerIR_twin_GaussianDenoise_sigma25.yml'),
                                ('train', 'train_SpikerIR_GaussianDenoise_sigma25.yml'),
                                ('test', 'test_SpikerIR_GaussianDenoise_sigma25.yml'),
                                ('restore', 'test_SpikerIR_GaussianDenoise_sigma25.yml')],
    'ESDNet_Rain200L': [('train', 'train_ESDNet_Rain200L.yml'), ('test', 'test_ESDNet_Rain200L.yml'),
                        ('restore', 'test_ESDNet_Rain200L.yml')],
    # the published GoPro teacher itself: only its checkpoint (the file the GoPro twin distils from) is needed
    'NAFNetLocal_GoPro': [('test', 'test_NAFNetLocal_GoPro.yml')],
}
ORDER = ['GoPro', 'SIDD', 'GaussianDenoise_sigma25', 'ESDNet_Rain200L', 'NAFNetLocal_GoPro']  # longest first

# the only keys the shrinking may change (last component of the dotted key)
SIZE_KEYS = {'gt_size', 'batch_size_per_gpu', 'num_worker_per_gpu', 'persistent_workers', 'total_iter', 'T_max',
             'warmup_iter', 'end_iter', 'val_freq', 'print_freq', 'save_checkpoint_freq',
             'width', 'middle_blk_num', 'enc_blk_nums', 'dec_blk_nums', 'train_size',  # NAFNet / NAFNetLocal
             'dim', 'num_blocks', 'num_refinement_blocks',  # Restormer (dim: ESDNet too)
             'en_num_blocks', 'de_num_blocks'}  # ESDNet


# ------------------------------------------------------------------------------------------------ options files
def shipped(name):
    with open(os.path.join(OPTIONS, name)) as f:
        return yaml.safe_load(f)


def shrink_network(net):
    """Smaller ANN teachers and ESDNet, same arch and arguments; SpikerIR (preset tiny) stays as shipped."""
    kind = net.get('type')
    if kind in ('NAFNet', 'NAFNetLocal'):
        new = {'width': 8, 'middle_blk_num': 1, 'enc_blk_nums': [1] * len(net.get('enc_blk_nums', [])),
               'dec_blk_nums': [1] * len(net.get('dec_blk_nums', [])), 'train_size': [1, 3, CROP, CROP]}
    elif kind == 'Restormer':
        new = {'dim': 8, 'num_blocks': [1] * len(net.get('num_blocks', [])), 'num_refinement_blocks': 1}
    elif kind == 'ESDNet':  # dim 16: its channel attention squeezes channels by 16
        new = {'dim': 16, 'en_num_blocks': [1] * len(net.get('en_num_blocks', [])),
               'de_num_blocks': [1] * len(net.get('de_num_blocks', []))}
    else:
        new = {}
    net.update({k: v for k, v in new.items() if k in net})  # never a key the shipped file does not have


def shrink(opt):
    """The shipped options, changed only in size."""
    opt = copy.deepcopy(opt)
    train_set = (opt.get('datasets') or {}).get('train')
    if train_set:
        for key, value in (('gt_size', CROP), ('batch_size_per_gpu', BATCH), ('num_worker_per_gpu', 0),
                           ('persistent_workers', False)):
            if key in train_set:
                train_set[key] = value
    train = opt.get('train')
    if train:
        train['total_iter'] = ITERS
        if 'T_max' in train.get('scheduler', {}):
            train['scheduler']['T_max'] = ITERS
        if train.get('warmup_iter', -1) > 0:
            train['warmup_iter'] = 1
        for key in ('kd_schedule', 'hint_schedule'):
            if 'end_iter' in (train.get(key) or {}):
                train[key]['end_iter'] = ITERS
    if 'val_freq' in (opt.get('val') or {}):
        opt['val']['val_freq'] = ITERS
    if opt.get('logger'):
        opt['logger']['print_freq'] = 1
        opt['logger']['save_checkpoint_freq'] = ITERS
    for key in ('network_g', 'network_t'):
        if opt.get(key):
            shrink_network(opt[key])
    return opt


def flatten(opt, prefix=''):
    flat = {}
    for key, value in opt.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f'{prefix}{key}.'))
        else:
            flat[f'{prefix}{key}'] = value
    return flat


def assert_only_sizes_changed(original, shrunk, name):
    a, b = flatten(original), flatten(shrunk)
    assert set(a) == set(b), f'{name}: keys added {sorted(set(b) - set(a))}, removed {sorted(set(a) - set(b))}'
    changed = sorted(k for k in a if a[k] != b[k] and k.rsplit('.', 1)[-1] not in SIZE_KEYS)
    assert not changed, f'{name}: shrinking changed non-size keys {changed}'


def all_recipe_files():
    return {name for steps in RECIPES.values() for _, name in steps}


def test_every_shipped_options_file_belongs_to_a_recipe():
    assert set(os.listdir(OPTIONS)) == all_recipe_files()


def test_shrinking_changes_only_sizes():
    for name in sorted(all_recipe_files()):
        original = shipped(name)
        shrunk = shrink(original)
        assert_only_sizes_changed(original, shrunk, name)
        assert flatten(shrunk) != flatten(original) or name.startswith('test_SpikerIR_'), name


@pytest.mark.parametrize('task', [t for t in ORDER if any(k == 'train' for k, _ in RECIPES[t])])
def test_the_files_of_a_recipe_point_at_each_other(task):
    """Statically, as shipped: each step reads the net_g_latest.pth the step before writes, the test file builds the
    student's network and tests on the student's validation data."""
    trains = [shipped(name) for kind, name in RECIPES[task] if kind == 'train']
    test = shipped(next(name for kind, name in RECIPES[task] if kind == 'test'))
    for before, after in zip(trains, trains[1:]):
        assert after['path']['pretrain_network_t'] == f'experiments/{before["name"]}/models/net_g_latest.pth'
        assert after['network_t'] == before['network_g']  # step 2's teacher is step 1's network
        assert before['train']['ema_decay'] > 0 and after['path']['param_key_t'] == 'params_ema'
    student = trains[-1]
    assert test['path']['pretrain_network_g'] == f'experiments/{student["name"]}/models/net_g_latest.pth'
    assert test['network_g'] == student['network_g']
    assert test['path']['param_key_g'] in ('params', 'params_ema')
    (test_set,) = test['datasets'].values()
    val_set = student['datasets']['val']
    for key in ('type', 'dataroot_gt', 'dataroot_lq', 'io_backend', 'sigma', 'noise_seed', 'crop_to_multiple'):
        assert test_set.get(key) == val_set.get(key), key


def test_the_published_teacher_test_reads_the_teacher_the_twin_distils_from():
    teacher_test = shipped('test_NAFNetLocal_GoPro.yml')
    twin = shipped('train_SpikerIR_twin_GoPro.yml')
    assert teacher_test['path']['pretrain_network_g'] == twin['path']['pretrain_network_t']
    assert teacher_test['path']['param_key_g'] == twin['path']['param_key_t']
    net = {k: v for k, v in teacher_test['network_g'].items() if k != 'fast_imp'}  # a test-time switch
    assert net == twin['network_t']
    assert teacher_test['datasets']['test_1']['dataroot_gt'] == twin['datasets']['val']['dataroot_gt']


# ------------------------------------------------------------------------------------------------ the checkout
def write_rgb(path, rgb):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))


def noisy(rgb, rng, sigma=25):
    return np.clip(rgb + rng.normal(0, sigma, rgb.shape), 0, 255).round().astype(np.uint8)


def make_sidd(checkout):
    """SIDD-Medium-style scene folders and validation .mat blocks, through the plugin's own LMDB preparation (the
    LMDBs and meta_info.txt at the paths the SIDD options read)."""
    import scipy.io
    from spikerir_plugin.tools.prepare_data import prepare_sidd_train, prepare_sidd_val
    rng = np.random.default_rng(0)
    src = checkout / 'datasets' / 'SIDD' / 'Data'
    for i, gt in enumerate(photo_crops(64, 1)[:2]):
        scene = src / f'000{i + 1}_001_S6_00100_00060_3200_L'
        write_rgb(scene / f'000{i + 1}_GT_SRGB_010.PNG', gt)
        write_rgb(scene / f'000{i + 1}_NOISY_SRGB_010.PNG', noisy(gt, rng))
    assert prepare_sidd_train(str(src), str(checkout / 'datasets/SIDD/train'), crop=48, step=32, workers=1) == 8
    gt_blocks = np.stack(photo_crops(32, 1)[2:4])[None]  # 1 image x 2 blocks x 32 x 32 x 3, RGB
    noisy_mat, gt_mat = checkout / 'datasets/SIDD/noisy.mat', checkout / 'datasets/SIDD/gt.mat'
    scipy.io.savemat(noisy_mat, {'ValidationNoisyBlocksSrgb': noisy(gt_blocks, rng)})
    scipy.io.savemat(gt_mat, {'ValidationGtBlocksSrgb': gt_blocks})
    assert prepare_sidd_val(str(noisy_mat), str(gt_mat), str(checkout / 'datasets/SIDD/val')) == 2


def make_checkout(root):
    """A BasicSR-style checkout: basicsr/{train,test}.py copied from site-packages, the shipped options shrunk,
    small data and random-weight teacher checkpoints where the options look for them."""
    import basicsr
    from basicsr.archs import build_network
    checkout = root / 'BasicSR'
    (checkout / 'basicsr').mkdir(parents=True)
    (checkout / 'options').mkdir()
    for script in ('train.py', 'test.py'):
        shutil.copy(os.path.join(os.path.dirname(basicsr.__file__), script), checkout / 'basicsr' / script)
    opts = {}
    for name in sorted(all_recipe_files()):
        opts[name] = shrink(shipped(name))
        with open(checkout / 'options' / name, 'w') as f:
            yaml.safe_dump(opts[name], f, sort_keys=False)
    data = checkout / 'datasets'
    make_sidd(checkout)
    write_noisy_pairs(str(data / 'GoPro/train'), photo_crops(48, 2), seed=0)
    write_noisy_pairs(str(data / 'GoPro/test'), photo_crops(64, 1)[:2], seed=1)  # > 1.5 x train_size: local pools
    write_noisy_pairs(str(data / 'Rain200L/train'), photo_crops(48, 2), seed=2)
    write_noisy_pairs(str(data / 'Rain200L/test'), photo_crops(32, 1)[:2], seed=3)
    for i, img in enumerate(photo_crops(48, 2)):
        write_rgb(data / 'BSD400' / f'{i + 1}.png', img)
    for i, img in enumerate(photo_crops(41, 1)[:2]):  # crop_to_multiple 8 -> 40 x 40
        write_rgb(data / 'CBSD68' / f'{i:04d}.png', img)
    rng = np.random.default_rng(4)
    h, w = RESTORE_SIZE
    for task, steps in RECIPES.items():  # the users' own images for spikerir-restore
        if any(kind == 'restore' for kind, _ in steps):
            for k, img in enumerate(photo_crops(max(h, w), 1)[1:3]):
                write_rgb(checkout / 'my_photos' / task / f'photo_{k}.png', noisy(img[:h, :w], rng))
    teachers = {}
    for name, opt in opts.items():  # the ANN teachers: files the shipped options name, outside experiments/<run>
        path = (opt.get('path') or {}).get('pretrain_network_t') or ''
        if path.startswith('experiments/pretrained_models/'):
            torch.manual_seed(0)
            state = build_network(copy.deepcopy(opt['network_t'])).state_dict()
            key = opt['path'].get('param_key_t')
            target = checkout / path
            target.parent.mkdir(parents=True, exist_ok=True)
            torch.save({key: state} if key else state, target)
            teachers[path] = name
    assert len(teachers) == 3, teachers
    return checkout, opts


# ------------------------------------------------------------------------------------------------ the pipelines
def restore_command():
    script = os.path.join(os.path.dirname(PYTHON), 'spikerir-restore')
    return [script] if os.access(script, os.X_OK) else [PYTHON, '-m', 'spikerir_plugin.tools.restore']


def command(task, kind, name):
    if kind == 'train':
        return [PYTHON, 'basicsr/train.py', '-opt', f'options/{name}']
    if kind == 'test':
        return [PYTHON, 'basicsr/test.py', '-opt', f'options/{name}']
    return restore_command() + ['-opt', f'options/{name}', '-i', f'my_photos/{task}', '-o', f'restored/{task}']


def run_pipeline(checkout, task):
    """Run the task's steps in order, stopping at the first that fails; [(kind, options file, process, seconds)]."""
    env = subprocess_env()
    env['PYTHONPATH'] = ''  # the checkout is not importable: basicsr from site-packages, the plugin via its .pth hook
    done = []
    for kind, name in RECIPES[task]:
        start = time.monotonic()
        proc = subprocess.run(command(task, kind, name), cwd=checkout, env=env, capture_output=True, text=True,
                              timeout=300)
        done.append((kind, name, proc, time.monotonic() - start))
        if proc.returncode != 0:
            break
    return done


@pytest.fixture(scope='module')
def recipes(request, tmp_path_factory):
    """Start the pipelines of the selected tasks, two at a time: (checkout, shrunk options by file name,
    steps_of(task) -> run_pipeline's list, waiting for it)."""
    selected = {item.callspec.params['task'] for item in request.session.items
                if item.module is request.module and getattr(item, 'callspec', None) is not None
                and item.originalname == 'test_shipped_recipe_trains_tests_and_restores'}
    checkout, opts = make_checkout(tmp_path_factory.mktemp('recipes'))
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    futures = {task: pool.submit(run_pipeline, checkout, task) for task in ORDER if task in selected}

    def steps_of(task):
        if task not in futures:  # a selection the scan above did not see
            futures[task] = pool.submit(run_pipeline, checkout, task)
        return futures[task].result()

    yield checkout, opts, steps_of
    for future in futures.values():
        future.cancel()
    pool.shutdown(wait=True)


def read_rgb(path):
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, f'{path} is not a readable image'
    return img


def check_train(checkout, opt):
    exp = checkout / 'experiments' / opt['name']
    latest = exp / 'models' / 'net_g_latest.pth'
    assert (exp / 'models' / f'net_g_{ITERS}.pth').is_file() and latest.is_file(), sorted(os.listdir(exp))
    assert (exp / 'training_states' / f'{ITERS}.state').is_file()
    ckpt = torch.load(latest, map_location='cpu', weights_only=True)
    assert 'params' in ckpt
    if opt['train'].get('ema_decay', 0) > 0:
        assert set(ckpt['params_ema']) == set(ckpt['params'])
    logs = ''.join(open(p).read() for p in glob.glob(str(exp / 'train_*.log')))
    assert 'End of training' in logs
    assert f'iter:{ITERS:8,d}' in logs  # basicsr's progress line of the last iteration


def check_test(checkout, opt):
    results = checkout / 'results' / opt['name']
    logs = ''.join(open(p).read() for p in glob.glob(str(results / 'test_*.log')))
    (dataset,) = opt['datasets'].values()
    assert f'Validation {dataset["name"]}' in logs and '# psnr:' in logs and '# ssim:' in logs, logs[-2000:]
    folder = results / 'visualization' / dataset['name']
    if not opt['val']['save_img']:
        assert not folder.exists()
        return
    written = sorted(os.listdir(folder))
    if dataset['io_backend']['type'] == 'lmdb':
        with open(os.path.join(checkout, dataset['dataroot_lq'], 'meta_info.txt')) as f:
            stems = [line.split()[0].rsplit('.', 1)[0] for line in f if line.strip()]
    else:
        stems = [os.path.splitext(n)[0] for n in os.listdir(checkout / (dataset.get('dataroot_lq') or
                                                                         dataset['dataroot_gt']))]
    assert written == sorted(f'{stem}_{opt["name"]}.png' for stem in stems)
    for name in written:
        h, w = read_rgb(folder / name).shape[:2]
        multiple = dataset.get('crop_to_multiple') or 1
        assert h % multiple == 0 and w % multiple == 0 and h >= 32 and w >= 32, (name, h, w)


def check_restore(checkout, task):
    inputs = sorted(os.listdir(checkout / 'my_photos' / task))
    out = checkout / 'restored' / task
    assert sorted(os.listdir(out)) == inputs  # same names, PNG
    for name in inputs:
        given, restored = read_rgb(checkout / 'my_photos' / task / name), read_rgb(out / name)
        assert restored.shape == given.shape and restored.dtype == np.uint8, (name, restored.shape)
        assert not np.array_equal(restored, given), name  # the network ran


def describe(kind, name, proc):
    return (f'{kind} options/{name}: exit {proc.returncode}\n$ {" ".join(proc.args)}\n'
            f'STDOUT:\n{proc.stdout[-5000:]}\nSTDERR:\n{proc.stderr[-5000:]}')


@pytest.mark.parametrize('task', ORDER)
def test_shipped_recipe_trains_tests_and_restores(task, recipes):
    checkout, opts, steps_of = recipes
    steps = steps_of(task)
    for kind, name, proc, seconds in steps:
        print(f'{task}: {kind} {name} {seconds:.1f} s')
        assert proc.returncode == 0, describe(kind, name, proc)
        if kind == 'train':
            check_train(checkout, opts[name])
        elif kind == 'test':
            check_test(checkout, opts[name])
        else:
            check_restore(checkout, task)
    assert [s[:2] for s in steps] == RECIPES[task]
