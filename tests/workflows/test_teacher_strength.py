"""benchmarks/teacher_strength.py on a tiny configuration: one kd_ablation run set per teacher, the teacher-free
chain trained once and shared, the table's 'teacher adds' the paired recipe - chain_gt of each teacher's runs."""
import json
import os
import subprocess

import pytest

from conftest import PYTHON, REPO_ROOT, subprocess_env

SMALL = ['--teachers', '8:2', '8:6', '--seeds', '0', '--iters', '2', '--gt-size', '16', '--batch', '2',
         '--train-grid', '1', '--eval-grid', '1', '--jobs', '2', '--curve-points', '1', '--step-cost', '1']


def test_each_teacher_gets_its_own_twin_and_student_and_the_chain_without_teacher_is_shared(tmp_path):
    workdir = tmp_path / 'work'
    cmd = [PYTHON, os.path.join(REPO_ROOT, 'benchmarks', 'teacher_strength.py'), *SMALL, '--workdir', str(workdir)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    runs = sorted(p.name.split('-s0-')[0] for p in (workdir / 'runs').iterdir())
    assert runs == ['chain_gt', 'recipe', 'recipe', 'twin', 'twin', 'twin_gt']  # one twin and student per teacher
    assert len(list((workdir / 'teachers').iterdir())) == 2

    rows = json.loads((workdir / 'teacher_strength.json').read_text())['rows']
    assert [(r['width'], r['teacher_iters']) for r in rows] in ([(8, 2), (8, 6)], [(8, 6), (8, 2)])
    assert rows[0]['teacher_psnr'] <= rows[1]['teacher_psnr']
    for row in rows:
        out = json.loads((workdir / f'results-teacher-w{row["width"]}-{row["teacher_iters"]}.json').read_text())
        recipe, chain = (out['arms'][a]['psnr_params_per_seed'][0] for a in ('recipe', 'chain_gt'))
        assert row['contribution'][0] == pytest.approx(recipe - chain)
        assert row['kept'][0] == pytest.approx(recipe - out['fixed']['teacher']['psnr'])
        assert row['chain_gt'] == rows[0]['chain_gt']  # the same teacher-free run for every teacher
        assert row['teacher'] in proc.stdout
    assert (workdir / 'teacher_strength.png').stat().st_size > 0


def test_a_bad_teacher_or_harness_option_is_refused_before_training(tmp_path):
    script = os.path.join(REPO_ROOT, 'benchmarks', 'teacher_strength.py')
    for extra, words in ((['--teachers', '32'], 'WIDTH:ITERATIONS'), (['--gt-sise', '16'], '--gt-sise'),
                         (['--out', 'mine.json'], '--out is set per teacher')):
        proc = subprocess.run([PYTHON, script, *extra, '--workdir', str(tmp_path / 'w')], cwd=tmp_path,
                              env=subprocess_env(), capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and words in proc.stderr, proc.stderr
        assert not (tmp_path / 'w').exists()
