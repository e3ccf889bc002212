"""benchmarks/kd_scaling.py on a tiny configuration: kd_ablation's runs at each budget, every budget's compute on the
scale of the 1x recipe's, the table's gain the paired recipe - alone_eq of that budget's own results."""
import json
import os
import subprocess

import pytest

from conftest import PYTHON, REPO_ROOT, subprocess_env

SCRIPT = os.path.join(REPO_ROOT, 'benchmarks', 'kd_scaling.py')
SMALL = ['--budgets', '1:0,1', '2:1', '--base-iters', '2', '--seeds', '0', '--gt-size', '16', '--batch', '2',
         '--train-grid', '1', '--eval-grid', '1', '--jobs', '2', '--curve-points', '1', '--step-cost', '1',
         '--teacher-iters', '2']


def test_each_budget_trains_its_own_runs_and_lines_up_on_the_1x_recipes_compute(tmp_path):
    workdir = tmp_path / 'work'
    proc = subprocess.run([PYTHON, SCRIPT, *SMALL, '--workdir', str(workdir)], cwd=tmp_path, env=subprocess_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    runs = sorted(p.name.rsplit('-', 1)[0] for p in (workdir / 'runs').iterdir())
    # 1x: seeds 0 and 1; 2x: seed 1 (each budget's FACTOR:SEEDS)
    assert runs == sorted(f'{arm}-s{seed}' for arm in ('twin', 'recipe', 'alone_eq') for seed in (0, 1, 1))

    rows = json.loads((workdir / 'kd_scaling.json').read_text())['rows']
    assert [(r['factor'], r['iters'], r['seeds']) for r in rows] == [(1, 2, [0, 1]), (2, 4, [1])]
    for row in rows:
        out = json.loads((workdir / f'results-scaling-{row["factor"]}x.json').read_text())
        assert out['iters'] == row['iters'] and out['seeds'] == row['seeds']
        recipe, alone = (out['arms'][a]['psnr_params_per_seed'] for a in ('recipe', 'alone_eq'))
        assert row['gain_per_seed'] == pytest.approx([r - a for r, a in zip(recipe, alone)])  # paired by seed
        # alone_eq trains for the recipe's compute (up to rounding its iterations), so on the scale of the 1x
        # recipe's compute it sits at the budget's factor
        assert row['arms']['alone_eq']['x'] == pytest.approx(row['factor'], rel=0.25)
        assert row['arms']['alone_eq']['iters'] == out['alone_eq_iters']
    assert 'budget' in proc.stdout and (workdir / 'kd_scaling.png').stat().st_size > 0


def test_a_bad_budget_or_a_per_budget_option_is_refused_before_training(tmp_path):
    for extra, words in ((['--budgets', '4:a'], 'FACTOR or FACTOR:SEEDS'), (['--budgets', '0'], 'at least 1'),
                         (['--iters', '100'], '--iters is set per budget'), (['--gt-sise', '16'], '--gt-sise'),
                         (['--twin-it', '100'], '--twin-iters is set per budget'),
                         (['--budgets', '4', '4:0'], 'names a factor twice')):
        proc = subprocess.run([PYTHON, SCRIPT, *extra, '--workdir', str(tmp_path / 'w')], cwd=tmp_path,
                              env=subprocess_env(), capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and words in proc.stderr, proc.stderr
        assert not (tmp_path / 'w').exists()
