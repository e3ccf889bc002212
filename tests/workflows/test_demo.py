"""The README's first command, `spikerir-demo`, end to end on CPU with a few iterations per stage; and the README's
two fresh-machine commands (its block marked `<!-- test: fresh-machine -->`) against the programs they name."""
import glob
import json
import os
import re
import subprocess

import cv2
import numpy as np
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


def test_demo_trains_teacher_distills_student_and_reports(tmp_path):
    workdir = tmp_path / 'demo'
    proc = subprocess.run([PYTHON, '-m', 'spikerir_plugin.demo', '--workdir', str(workdir), '--teacher-iters', '4',
                           '--twin-iters', '4', '--student-iters', '4', '--energy-size', '32'],
                          cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    rows = {name: (float(psnr), float(ssim)) for name, psnr, ssim in re.findall(
        r'^(noisy input|teacher \(NAFNet\)|analog twin \(no spikes\)|student \(SpikerIR\)|'
        r'student alone \(SpikerIR\))\s+([\d.]+)\s+([\d.]+)', out, re.M)}
    assert set(rows) == {'noisy input', 'teacher (NAFNet)', 'analog twin (no spikes)', 'student (SpikerIR)',
                         'student alone (SpikerIR)'}, out[-3000:]
    assert 15 < rows['noisy input'][0] < 25  # sigma 25 on [0, 255] images: about 20 dB
    # both networks were trained and saved by the pipeline, then evaluated from those checkpoints
    for name in ('demo_teacher_NAFNet', 'demo_twin_SpikerIR', 'demo_student_SpikerIR', 'demo_student_SpikerIR_alone'):
        assert (workdir / 'experiments' / name / 'models' / 'net_g_latest.pth').is_file()
    # the recipe: teacher -> twin (rate neurons, T=1) -> student started from the twin and distilled from it
    twin = yaml.safe_load((workdir / 'train_demo_twin.yml').read_text())
    assert twin['network_g']['neuron'] == 'rate' and twin['network_t']['type'] == 'NAFNet'
    assert twin['path']['pretrain_network_t'].endswith('demo_teacher_NAFNet/models/net_g_latest.pth')
    # the alone arm: the same student options without the teacher and the distillation terms
    alone = yaml.safe_load((workdir / 'train_demo_student_alone.yml').read_text())
    distilled = yaml.safe_load((workdir / 'train_demo_student.yml').read_text())
    assert distilled['network_t'] == twin['network_g'] and distilled['train']['init_from_teacher']
    assert distilled['path']['pretrain_network_t'].endswith('demo_twin_SpikerIR/models/net_g_latest.pth')
    assert 'network_t' not in alone and 'kd_opt' not in alone['train'] and 'hint_opt' not in alone['train']
    assert 'init_from_teacher' not in alone['train']
    assert alone['network_g'] == distilled['network_g'] and alone['train']['total_iter'] == 4
    assert alone['datasets'] == distilled['datasets'] and alone['manual_seed'] == distilled['manual_seed']
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
    assert all(f'[{n}/7]' in proc.stderr for n in range(1, 8))
    teacher_log = open(glob.glob(str(workdir / 'experiments' / 'demo_teacher_NAFNet' / 'train_*.log'))[0]).read()
    assert 'datasets:[' in teacher_log and 'PixelShuffle' in teacher_log
