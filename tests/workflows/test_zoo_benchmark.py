"""benchmarks/zoo.py end to end on its smallest configuration: two archs (SpikerIR tiny and the NAFNet-w16
reference), one training step per arm, 16x16 crops, a temporary workdir. Checks that the table has the rows and
columns it claims, that each arm trained with its model from the shipped options, and that a second call trains
nothing again. No quality or speed thresholds."""
import json
import os
import subprocess

import yaml

from conftest import PYTHON, REPO_ROOT, subprocess_env

SMALL = ['--archs', 'tiny', 'nafnet', '--seeds', '0', '--iters', '1', '--teacher-iters', '1', '--teacher-gt-size',
         '16', '--gt-size', '16', '--batch', '2', '--train-grid', '1', '--eval-grid', '1', '--size', '32',
         '--repeats', '1', '--step-cost', '1']
MODELS = {'tiny-alone': 'SpikingSRModel', 'tiny-distilled': 'SpikerIRDistillModel',
          'nafnet-alone': 'SpikingSRModel'}


def table(md, heading):
    """The rows of the first markdown table after ``heading``, as lists of cells (header row first)."""
    lines = md[md.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith('|'))
    rows = []
    for line in lines[start:]:
        if not line.startswith('|'):
            break
        rows.append([c.strip() for c in line.strip('|').split('|')])
    return [rows[0]] + rows[2:]  # without the |---| line


def run_zoo(tmp_path):
    cmd = [PYTHON, os.path.join(REPO_ROOT, 'benchmarks', 'zoo.py'), *SMALL, '--workdir', str(tmp_path / 'work'),
           '--out', str(tmp_path / 'zoo.md')]
    proc = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr  # the tables (stdout) and the progress lines (stderr)


def test_zoo_table_has_its_rows_and_columns(tmp_path):
    run_zoo(tmp_path)
    md = (tmp_path / 'zoo.md').read_text()

    cost = table(md, '## Cost per 32x32 image')
    assert cost[0] == ['arch', 'weights', 'params', 'SynOps (G)', 'MACs (G)', 'energy (mJ)', 'CPU eval (ms)',
                       'CPU fast (ms)', 'eval / NAFNet', 'fast / NAFNet']
    assert [r[0] for r in cost[1:]] == ['SpikerIR tiny', 'NAFNet-w16 (ANN)']
    assert all(len(r) == len(cost[0]) for r in cost)
    tiny, nafnet = cost[1:]
    assert tiny[2] == '92,935'  # the preset's documented size
    assert nafnet[3] == '0' and nafnet[8] == '1.00x'  # an ANN has no SynOps; the reference against itself

    results = json.loads((tmp_path / 'work' / 'zoo' / 'results.json').read_text())
    step = results['step_s']  # measured on the test's machine: the distilled arm's iterations follow them
    distilled_iters = max(1, round(step['tiny-alone'] / step['tiny-distilled']))
    for heading in ('## Quality', 'raw weights'):
        quality = table(md, heading)
        assert len(quality[0]) == 10 and quality[0][:2] == ['arch', 'alone: it']
        names = [r[0] for r in quality[1:]]
        assert names == ['noisy input', 'teacher NAFNet-w16', 'SpikerIR tiny', 'NAFNet-w16 (ANN)']
        tiny_q, nafnet_q = quality[3:]
        # both arms (the distilled one at the alone arm's measured compute), a paired difference
        assert tiny_q[1] == '1' and tiny_q[4] == str(distilled_iters) and '+-' in tiny_q[7]
        assert nafnet_q[4] == '-'  # the ANN reference is trained alone only

    assert set(results['step_s']) == set(MODELS)
    for run in (tmp_path / 'work' / 'zoo' / 'runs').iterdir():
        arm = run.name.split('-s0-')[0]
        opt = yaml.safe_load((run / 'options.yml').read_text())
        log, = run.glob('experiments/*/train_*.log')
        assert f'Model [{MODELS[arm]}] is created' in log.read_text(), arm
        assert opt['datasets']['train']['gt_size'] == 16
        assert opt['train']['total_iter'] == (distilled_iters if arm == 'tiny-distilled' else 1), arm
        if arm.endswith('distilled'):
            assert opt['network_t']['type'] == 'NAFNet' and 'hint_opt' not in opt['train']

    assert '3 runs (3 already trained)' in run_zoo(tmp_path)  # cached by the digest of their options
