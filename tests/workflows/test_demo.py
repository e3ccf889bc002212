"""The README's first command, `spikerir-demo`, end to end on CPU with a few iterations per stage; and the README's
two fresh-machine commands (its block marked `<!-- test: fresh-machine -->`) against the programs they name."""
import copy
import glob
import json
import os
import re
import subprocess

import cv2
import numpy as np
import pytest
import yaml

from conftest import PYTHON, REPO_ROOT, subprocess_env
from doc_blocks import block_commands, marked_blocks


def test_readme_fresh_machine_commands_are_the_demo_and_what_ci_runs():
    demo, tests = block_commands(marked_blocks('README.md', 'fresh-machine', 'bash')[0])
    assert demo == 'bash install.sh && .venv/bin/spikerir-demo'
    assert tests == 'bash install.sh && .venv/bin/python -m pytest -q tests'
    setup = open(os.path.join(REPO_ROOT, 'setup.py')).read()
    assert re.search(r"'spikerir-demo=[\w.]+:main'", setup)  # the program the demo command runs
    ci = [line.strip() for line in open(os.path.join(REPO_ROOT, '.ci', 'run')).read().splitlines()]
    assert 'bash install.sh' in ci and '.venv/bin/python -m pytest -q tests' in ci  # .ci/run: the same two steps
    assert os.path.isfile(os.path.join(REPO_ROOT, 'install.sh'))


TRAIN_SIZE_KEYS = ('dataroot_gt', 'gt_size', 'batch_size_per_gpu', 'num_worker_per_gpu', 'persistent_workers',
                   'io_backend')


def without_size_keys(opt, teacher_replaced=False):
    """The options less the keys the demo may change: run name, validation and logging, iterations with their
    schedules, the training data's size keys, the validation folder, the teacher's checkpoint (and step 1's
    teacher)."""
    opt = copy.deepcopy(opt)
    for key in ('name', 'val', 'logger'):
        opt.pop(key, None)
    opt['train'].pop('total_iter')
    opt['train']['scheduler'].pop('T_max')
    (opt['train'].get('kd_schedule') or {}).pop('end_iter', None)
    for key in TRAIN_SIZE_KEYS:
        opt['datasets']['train'].pop(key, None)
    for key in ('dataroot_gt', 'name'):
        opt['datasets']['val'].pop(key)
    opt['path'].pop('pretrain_network_t', None)
    if teacher_replaced:
        opt.pop('network_t')
    return opt


def test_demo_trains_the_shipped_recipe_and_the_student_alone_at_equal_compute(tmp_path):
    from spikerir_plugin.utils.options import student_alone_options
    from spikerir_plugin.recipes import load_shipped_options
    workdir = tmp_path / 'demo'
    proc = subprocess.run([PYTHON, '-m', 'spikerir_plugin.demo', '--workdir', str(workdir), '--teacher-iters', '4',
                           '--twin-iters', '6', '--student-iters', '2', '--step-cost', '1', '--energy-size', '32'],
                          cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    rows = {name: (float(psnr), float(ssim), rest.split()) for name, psnr, ssim, rest in re.findall(
        r'^(noisy input|teacher \(NAFNet\)|analog twin \(no spikes\)|student \(SpikerIR\)|'
        r'student alone \(SpikerIR\))\s+([\d.]+)\s+([\d.]+)(.*)$', out, re.M)}
    assert set(rows) == {'noisy input', 'teacher (NAFNet)', 'analog twin (no spikes)', 'student (SpikerIR)',
                         'student alone (SpikerIR)'}, out[-3000:]
    assert 15 < rows['noisy input'][0] < 25  # sigma 25 on [0, 255] images: about 20 dB
    # every network was trained and saved by the pipeline, then evaluated from those checkpoints
    for name in ('demo_teacher_NAFNet', 'demo_twin_SpikerIR', 'demo_student_SpikerIR', 'demo_student_SpikerIR_alone'):
        assert (workdir / 'experiments' / name / 'models' / 'net_g_latest.pth').is_file()

    # both steps are the shipped files changed in size only, step 1 with the demo's teacher
    twin = yaml.safe_load((workdir / 'train_demo_twin.yml').read_text())
    distilled = yaml.safe_load((workdir / 'train_demo_student.yml').read_text())
    alone = yaml.safe_load((workdir / 'train_demo_student_alone.yml').read_text())
    shipped_twin = load_shipped_options('train_SpikerIR_twin_GaussianDenoise_sigma25.yml')
    shipped_student = load_shipped_options('train_SpikerIR_GaussianDenoise_sigma25.yml')
    assert without_size_keys(twin, True) == without_size_keys(shipped_twin, True)
    assert without_size_keys(distilled) == without_size_keys(shipped_student)
    assert without_size_keys(alone) == without_size_keys(student_alone_options(shipped_student))
    for opt, iters in ((twin, 6), (distilled, 2)):
        train = opt['datasets']['train']
        assert [train[key] for key in TRAIN_SIZE_KEYS[1:]] == [32, 8, 0, False, {'type': 'lmdb'}]
        assert train['dataroot_gt'].endswith('photos_train.lmdb')
        assert opt['train']['total_iter'] == opt['train']['scheduler']['T_max'] == iters
    assert distilled['train']['kd_schedule']['end_iter'] == 2
    assert twin['network_t']['type'] == 'NAFNet'
    assert twin['path']['pretrain_network_t'].endswith('demo_teacher_NAFNet/models/net_g_latest.pth')
    assert distilled['path']['pretrain_network_t'].endswith('demo_twin_SpikerIR/models/net_g_latest.pth')
    assert 'Student initialised from the teacher' in open(glob.glob(
        str(workdir / 'experiments' / 'demo_student_SpikerIR' / 'train_*.log'))[0]).read()

    # the student alone trains for the recipe's compute: twin and distilled student, by the measured step times
    compute = json.loads((workdir / 'results' / 'compute.json').read_text())
    step = compute['step_s']
    assert set(step) == {'twin', 'student', 'alone'} and all(s > 0 for s in step.values())
    recipe = step['twin'] * 6 + step['student'] * 2
    assert alone['train']['total_iter'] == max(round(recipe / step['alone']), 1) == compute['iters']['alone']
    assert alone['train']['scheduler']['T_max'] == alone['train']['total_iter']
    assert alone['datasets'] == distilled['datasets'] and alone['manual_seed'] == distilled['manual_seed']
    assert 'network_t' not in alone and 'init_from_teacher' not in alone['train']

    # the table: iterations and training compute per run (the recipe's with its twin's), the gain at equal compute
    assert rows['teacher (NAFNet)'][2][1:] == ['4', 'given']
    assert rows['analog twin (no spikes)'][2][1:] == ['6', f'{step["twin"] * 6:.1f}']
    assert rows['student (SpikerIR)'][2][1:] == ['2', f'{recipe:.1f}']
    assert rows['student alone (SpikerIR)'][2][1:] == [str(compute['iters']['alone']),
                                                       f'{step["alone"] * compute["iters"]["alone"]:.1f}']
    gain = re.search(r"^distillation ([+-][\d.]+) dB over the student alone at equal compute \(twin's training "
                     r"included\)$", out, re.M)
    assert gain, out
    assert float(gain.group(1)) == pytest.approx(rows['student (SpikerIR)'][0] - rows['student alone (SpikerIR)'][0],
                                                 abs=0.011)
    student = json.loads((workdir / 'results' / 'energy' / 'energy.json').read_text())
    assert student['student']['spiking'] and not student['teacher']['spiking']
    assert any(layer['name'] == 'intro' for layer in student['teacher']['layers'])  # the NAFNet, not the twin
    assert student['student']['totals']['synops'] > 0 and student['teacher']['totals']['synops'] == 0
    assert (workdir / 'results' / 'energy' / 'energy.png').stat().st_size > 0
    assert 'energy ratio teacher/student' in out
    # the comparison image: a header, then per validation photo noisy | teacher | student | clean, enlarged 2x
    comparison = re.search(r'^comparison image .*: (\S+)$', out, re.M).group(1)
    img = cv2.imread(comparison)
    assert img.shape == (24 + 2 * 192 + 4, 4 * 192 + 3 * 4, 3)
    for row, photo in ((24, 'camera'), (24 + 192 + 4, 'coffee')):
        clean = img[row:row + 192:2, 3 * 196::2]  # last column: the clean crop, one of that photo's
        crops = [cv2.imread(str(p)) for p in (workdir / 'datasets' / 'photos_val').glob(f'{photo}_*.png')]
        assert any((clean == crop).all() for crop in crops)
        noisy = img[row:row + 192:2, 0:192:2].astype(float)
        assert 15 < 10 * np.log10(255 ** 2 / ((noisy - clean) ** 2).mean()) < 25  # the noisy input, ~20 dB
    assert re.search(r'^energy plot: (\S+)', out, re.M).group(1) == str(workdir / 'results' / 'energy' / 'energy.png')
    # a page a person reads: the console has the stages and results; dumps and printouts are in the log files
    assert len(out.splitlines()) < 30 and 'Network structure' not in out + proc.stderr
    assert 'datasets:' not in proc.stderr and 'PixelShuffle' not in proc.stderr
    assert all(f'[{n}/8]' in proc.stderr for n in range(1, 9))
    teacher_log = open(glob.glob(str(workdir / 'experiments' / 'demo_teacher_NAFNet' / 'train_*.log'))[0]).read()
    assert 'datasets:[' in teacher_log and 'PixelShuffle' in teacher_log
