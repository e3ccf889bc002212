"""spikerir_plugin.recipes: the shipped options files found from the source checkout and from a wheel's build
(setup.py's build_py copy), and the shipped files changed in size only."""
import copy
import os
import subprocess
import sys

import pytest
import yaml

from conftest import REPO_ROOT
from spikerir_plugin import recipes

TWIN = 'train_SpikerIR_twin_GaussianDenoise_sigma25.yml'
STUDENT = 'train_SpikerIR_GaussianDenoise_sigma25.yml'


def checkout_file(name):
    with open(os.path.join(REPO_ROOT, 'options', name)) as f:
        return yaml.safe_load(f)


def test_checkout_lookup_finds_the_options_folder_and_names_the_folders_when_absent():
    path = recipes.shipped_options_path(TWIN)
    assert os.path.samefile(path, os.path.join(REPO_ROOT, 'options', TWIN))
    assert recipes.shipped_options_path('options/' + STUDENT) == recipes.shipped_options_path(STUDENT)
    assert recipes.load_shipped_options(STUDENT) == checkout_file(STUDENT)
    with pytest.raises(FileNotFoundError) as error:
        recipes.shipped_options_path('train_nothing.yml')
    message = str(error.value)
    assert 'train_nothing.yml' in message
    assert os.path.join(REPO_ROOT, 'options') in message and os.path.join('spikerir_plugin', 'shipped_options') in message
    for bad in ('../options/' + TWIN, 'elsewhere/' + TWIN, ''):
        with pytest.raises(ValueError, match='shipped options file'):
            recipes.shipped_options_path(bad)


def test_a_wheel_build_carries_the_shipped_options_and_the_lookup_finds_them(tmp_path):
    """build_py (what `pip wheel` runs) into a folder outside the checkout; the package imported from there finds
    the files in its own copy, as a non-editable install does."""
    build = tmp_path / 'build_lib'
    proc = subprocess.run([sys.executable, 'setup.py', '-q', 'build_py', '--build-lib', str(build)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    copied = sorted(os.listdir(build / 'spikerir_plugin' / 'shipped_options'))
    assert copied == sorted(n for n in os.listdir(os.path.join(REPO_ROOT, 'options')) if n.endswith('.yml'))
    env = dict(os.environ, PYTHONPATH=str(build), SPIKERIR_NO_AUTOLOAD='1')
    code = ('from spikerir_plugin import recipes; '
            f'print(recipes.__file__); print(recipes.shipped_options_path({TWIN!r}))')
    proc = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    module, path = proc.stdout.split()
    assert module.startswith(str(build))  # the built package, not the checkout
    assert path == str(build / 'spikerir_plugin' / 'shipped_options' / TWIN)
    with open(path) as f:
        assert yaml.safe_load(f) == checkout_file(TWIN)


def test_rescale_iterations_scales_every_schedule_with_the_iterations():
    opt = recipes.rescale_iterations(checkout_file(STUDENT), 120)
    assert opt['train']['total_iter'] == 120 and opt['train']['scheduler']['T_max'] == 120
    assert opt['train']['kd_schedule']['end_iter'] == 120 and opt['train']['kd_schedule']['start_iter'] == 0
    opt = {'train': {'total_iter': 1000, 'scheduler': {'periods': [500, 500], 'milestones': [250, 750]},
                     'kd_schedule': {'start_iter': 100, 'end_iter': 900},
                     'hint_schedule': {'steps': [200, 600]}}}
    recipes.rescale_iterations(opt, 10)
    assert opt['train'] == {'total_iter': 10, 'scheduler': {'periods': [5, 5], 'milestones': [2, 8]},
                            'kd_schedule': {'start_iter': 1, 'end_iter': 9}, 'hint_schedule': {'steps': [2, 6]}}
    opt = {'train': {'total_iter': 1000, 'scheduler': {'T_max': 1000}}}
    assert recipes.rescale_iterations(opt, 1)['train']['scheduler']['T_max'] == 1


def test_resized_changes_only_the_size_keys_and_leaves_the_shipped_dict_alone():
    shipped = checkout_file(TWIN)
    original = copy.deepcopy(shipped)
    opt = recipes.resized(shipped, 30, 'train.lmdb', 'val', 'photos-val', 32, 8, train_backend='lmdb')
    assert shipped == original
    train = opt['datasets']['train']
    assert (train['dataroot_gt'], train['gt_size'], train['batch_size_per_gpu'], train['num_worker_per_gpu'],
            train['persistent_workers'], train['io_backend']) == ('train.lmdb', 32, 8, 0, False, {'type': 'lmdb'})
    assert (opt['datasets']['val']['dataroot_gt'], opt['datasets']['val']['name']) == ('val', 'photos-val')
    assert opt['train']['total_iter'] == opt['train']['scheduler']['T_max'] == 30
    for section in (opt, original):
        for key in ('dataroot_gt', 'gt_size', 'batch_size_per_gpu', 'num_worker_per_gpu', 'persistent_workers',
                    'io_backend'):
            section['datasets']['train'].pop(key)
        for key in ('dataroot_gt', 'name'):
            section['datasets']['val'].pop(key)
        section['train'].pop('total_iter')
        section['train']['scheduler'].pop('T_max')
    assert opt == original
    # without train_backend the file's backend stays
    assert recipes.resized(shipped, 30, 'd', 'v', 'n', 16, 2)['datasets']['train']['io_backend'] == {'type': 'disk'}


def test_equal_compute_iterations():
    assert recipes.equal_compute_iterations(10.0, 0.4) == 25
    assert recipes.equal_compute_iterations(0.1, 1.0) == 1
    with pytest.raises(ValueError, match='step time'):
        recipes.equal_compute_iterations(1.0, 0.0)


def test_step_costs_time_the_sized_recipe_before_any_teacher_is_trained(tmp_path):
    from spikerir_plugin.demo import TEACHER_NET
    from spikerir_plugin.utils.options import student_alone_options
    size = dict(train_dir=str(tmp_path), val_dir=str(tmp_path), val_name='v', gt_size=16, batch=2)
    twin = recipes.resized(checkout_file(TWIN), 4, **size)
    twin['network_t'] = dict(TEACHER_NET)
    twin['path']['pretrain_network_t'] = str(tmp_path / 'no_teacher_yet.pth')
    student = recipes.resized(checkout_file(STUDENT), 4, **size)
    sets = {'twin': twin, 'student': student, 'alone': student_alone_options(student)}
    ready = recipes.with_untrained_teachers(sets, str(tmp_path))
    assert sets['twin']['path']['pretrain_network_t'].endswith('no_teacher_yet.pth')  # the input is not changed
    assert os.path.isfile(ready['twin']['path']['pretrain_network_t'])
    assert os.path.isfile(ready['student']['path']['pretrain_network_t'])
    assert 'network_t' not in ready['alone']
    costs = recipes.step_costs(ready, 1, 'cpu')
    assert set(costs) == set(sets) and all(c > 0 for c in costs.values())


def test_untrained_teachers_of_two_calls_on_one_folder_never_overwrite_each_other(tmp_path):
    import torch
    size = dict(train_dir=str(tmp_path), val_dir=str(tmp_path), val_name='v', gt_size=16, batch=2)
    tiny = recipes.resized(checkout_file(STUDENT), 4, **size)
    base = copy.deepcopy(tiny)
    base['network_t']['preset'] = 'base'
    first = recipes.with_untrained_teachers({'recipe': tiny}, str(tmp_path))['recipe']['path']['pretrain_network_t']
    second = recipes.with_untrained_teachers({'recipe': base}, str(tmp_path))['recipe']['path']['pretrain_network_t']
    again = recipes.with_untrained_teachers({'student': tiny}, str(tmp_path))['student']['path']['pretrain_network_t']
    assert first != second and again == first  # named by the network, not by the caller's key
    sizes = [sum(v.numel() for v in torch.load(p, map_location='cpu')['params'].values()) for p in (first, second)]
    assert sizes[0] < sizes[1]  # the tiny twin's weights stayed where the base call wrote its own
    assert not [p for p in os.listdir(tmp_path) if p.endswith('.partial')]
