"""benchmarks/energy_front.py end to end on a tiny configuration: both presets, the unpenalised recipe and one
penalty; each preset's twin is trained once and shared by its settings; the unpenalised runs carry kd_ablation's
arm names (so its trained runs are reused); the table pairs each setting with its preset's w=0; a second call
trains nothing."""
import json
import os
import re
import subprocess

import yaml

from conftest import PYTHON, REPO_ROOT, subprocess_env

TINY = ['--presets', 'tiny', 'base', '--weights', '0', '4', '--seeds', '0', '--iters', '2', '--twin-iters', '2',
        '--teacher-iters', '2', '--gt-size', '16', '--batch', '2', '--train-grid', '1', '--eval-grid', '1',
        '--energy-size', '32', '--jobs', '2']


def test_front_trains_each_presets_twin_once_and_pairs_settings_with_the_unpenalised_recipe(tmp_path):
    workdir = tmp_path / 'work'
    cmd = [PYTHON, os.path.join(REPO_ROOT, 'benchmarks', 'energy_front.py'), *TINY, '--workdir', str(workdir)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    runs = {}
    for run in (workdir / 'runs').iterdir():
        opt = yaml.safe_load((run / 'options.yml').read_text())
        runs.setdefault(opt['network_g']['preset'], {})[run.name.split('-s0-')[0]] = opt
    assert {preset: sorted(arms) for preset, arms in runs.items()} == {
        'tiny': ['recipe', 'tiny-w=4', 'twin'], 'base': ['base-w=4', 'recipe', 'twin']}
    for preset, arms in runs.items():
        assert 'energy_opt' not in arms['recipe']['train']
        assert arms[f'{preset}-w=4']['train']['energy_opt'] == {'type': 'SynOpsLoss', 'loss_weight': 4.0,
                                                               'unit': 'mJ'}
        # both students start from and distil the same twin: the one of their preset
        twin_ckpts = {arms[a]['path']['pretrain_network_t'] for a in ('recipe', f'{preset}-w=4')}
        assert len(twin_ckpts) == 1 and f'{os.sep}twin-s0-' in twin_ckpts.pop()
        assert arms['recipe']['network_t']['preset'] == preset

    front = json.loads((workdir / 'front.json').read_text())
    rows = {(r['preset'], r['setting']): r for r in front['rows']}
    assert set(rows) == {(p, s) for p in ('tiny', 'base') for s in ('w=0', 'w=4')}
    for preset in ('tiny', 'base'):
        assert rows[(preset, 'w=0')]['psnr_vs_w0'] == [0.0, 0.0]
        penalised = rows[(preset, f'w=4')]
        assert penalised['psnr_vs_w0'][0] == penalised['psnr'][0] - rows[(preset, 'w=0')]['psnr'][0]
        assert penalised['mJ_per_image'][0] > 0
    assert rows[('base', 'w=0')]['synops_per_image'][0] > rows[('tiny', 'w=0')]['synops_per_image'][0]
    for preset, setting in rows:
        assert re.search(rf'^{preset}\s+{re.escape(setting)}\s', proc.stdout, re.M), (preset, setting)

    again = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert re.search(r'^[\d:]+ training ', proc.stderr, re.M)
    assert not re.search(r'^[\d:]+ training ', again.stderr, re.M)
