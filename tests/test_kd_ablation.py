"""benchmarks/kd_ablation.py end to end on a tiny configuration: a distillation options file, one variant, two
seeds; both arms train through basicsr's pipeline (SpikerIRDistillModel and, for the student alone,
SpikingSRModel); the table, results.json and curves.png come out with the expected structure."""
import json
import os
import re
import subprocess

import cv2
import torch
import yaml

import spikerir_plugin  # noqa: F401
from basicsr.archs import build_network
from conftest import PYTHON, REPO_ROOT, photo_crops, subprocess_env

TEACHER = {'type': 'NAFNet', 'width': 8, 'middle_blk_num': 1, 'enc_blk_nums': [1, 1], 'dec_blk_nums': [1, 1]}


def tiny_options(root):
    train_dir, val_dir = root / 'train', root / 'val'
    for folder, crops in ((train_dir, photo_crops(32, 1)), (val_dir, photo_crops(16, 1)[:2])):
        folder.mkdir()
        for i, crop in enumerate(crops):
            cv2.imwrite(str(folder / f'{i}.png'), crop[..., ::-1])
    teacher = root / 'teacher.pth'
    torch.manual_seed(0)
    torch.save({'params': build_network(dict(TEACHER)).state_dict()}, teacher)
    return {
        'name': 'tiny_kd', 'model_type': 'SpikerIRDistillModel', 'scale': 1, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {
            'train': {'name': 'tiny', 'type': 'GaussianDenoiseDataset', 'dataroot_gt': str(train_dir),
                      'io_backend': {'type': 'disk'}, 'sigma': 25, 'gt_size': 16, 'use_hflip': True,
                      'num_worker_per_gpu': 0, 'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 1,
                      'prefetch_mode': None},
            'val': {'name': 'tiny-val', 'type': 'GaussianDenoiseDataset', 'dataroot_gt': str(val_dir),
                    'io_backend': {'type': 'disk'}, 'sigma': 25}},
        'network_g': {'type': 'SpikerIR', 'preset': 'tiny', 'dim': 4, 'T': 2, 'reduction_t': 2},
        'network_t': TEACHER,
        'path': {'pretrain_network_t': str(teacher), 'strict_load_t': True},
        'train': {'optim_g': {'type': 'AdamW', 'lr': 1e-3}, 'total_iter': 10, 'warmup_iter': -1,
                  'scheduler': {'type': 'CosineAnnealingLR', 'T_max': 10, 'eta_min': 1e-6},
                  'pixel_opt': {'type': 'L1Loss'}, 'kd_opt': {'type': 'L1Loss'},
                  'kd_schedule': {'type': 'linear', 'start': 1.0, 'end': 0.0, 'end_iter': 10}},
        'val': {'val_freq': 10, 'metrics': {
            'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False},
            'ssim': {'type': 'calculate_ssim', 'crop_border': 0, 'test_y_channel': False}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 10, 'use_tb_logger': False},
    }


def test_harness_trains_both_arms_through_the_models_and_writes_table_json_and_curves(tmp_path):
    opt_file, variants = tmp_path / 'kd.yml', tmp_path / 'variants.yml'
    opt_file.write_text(yaml.safe_dump(tiny_options(tmp_path)))
    variants.write_text(yaml.safe_dump({'out_kd': {'train': {'kd_schedule': {'type': 'constant', 'start': 2.0}}}}))
    workdir = tmp_path / 'work'
    cmd = [PYTHON, os.path.join(REPO_ROOT, 'benchmarks', 'kd_ablation.py'), '--opt', str(opt_file), '--variants',
           str(variants), '--seeds', '0', '1', '--iters', '4', '--jobs', '4', '--curve-points', '2',
           '--workdir', str(workdir)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # both arms went through basicsr's pipeline with their own model, 4 iterations each, per seed
    logs = {}  # the full basicsr log of each run (the console shows progress only)
    for run in (workdir / 'runs').iterdir():
        full_log, = run.glob('experiments/*/train_*.log')
        logs.setdefault(run.name.rsplit('-', 1)[0], []).append(full_log.read_text())
    assert len(logs['alone']) == len(logs['out_kd']) == 2  # one run per seed
    assert all('Model [SpikingSRModel] is created' in log and 'l_kd' not in log for log in logs['alone'])
    assert all('Model [SpikerIRDistillModel] is created' in log and 'l_kd:' in log for log in logs['out_kd'])
    runs = sorted((json.loads(p.read_text())['arm'], json.loads(p.read_text())['seed'])
                  for p in workdir.glob('runs/*/result.json'))
    assert runs == [('alone', 0), ('alone', 1), ('out_kd', 0), ('out_kd', 1)]
    for path in workdir.glob('runs/*/train.log'):  # every run logged iterations 1..4 (print_freq 1)
        assert re.findall(r'\[epoch:\s*\d+, iter:\s+(\d+)', path.read_text()) == ['1', '2', '3', '4']

    # the table: noisy input, teacher, alone, the variant with a paired gain
    table = proc.stdout[proc.stdout.index('KD ablation: 4 iterations'):]
    rows = {m.group(1): m.groups()[1:] for m in
            re.finditer(r'^(noisy input|teacher \S+|alone|out_kd)\s+([\d.]+)(?: \+- ([\d.]+))?', table, re.M)}
    assert set(rows) == {'noisy input', 'teacher NAFNet-w8', 'alone', 'out_kd'}, table
    assert re.search(r'^out_kd\s+[\d.]+ \+- [\d.]+\s+[\d.]+ \+- [\d.]+\s+[+-][\d.]+ \+- [\d.]+', table, re.M), table

    result = json.loads((workdir / 'results.json').read_text())
    assert result['iters'] == 4 and result['seeds'] == [0, 1]
    arms = {a['arm']: a for a in result['arms']}
    assert set(arms) == {'alone', 'out_kd'} and arms['out_kd']['reference'] == 'alone'
    for arm in arms.values():
        assert len(arm['psnr_per_seed']) == 2 and len(arm['psnr']) == 2 and len(arm['ssim']) == 2
        assert [it for it, _ in arm['curve']] == [2, 4]
    gain = arms['out_kd']['gain_psnr_per_seed']
    assert gain == [p - a for p, a in zip(arms['out_kd']['psnr_per_seed'], arms['alone']['psnr_per_seed'])]
    assert set(result['fixed']) == {'noisy input', 'teacher NAFNet-w8'}
    assert (workdir / 'curves.png').stat().st_size > 0

    # a second call reuses the trained runs (nothing retrained) and gives the same table
    again = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and '(4 already trained)' in again.stdout
    assert again.stdout[again.stdout.index('KD ablation: 4'):].split('results:')[0] == table.split('results:')[0]


def test_step_costs_time_each_models_training_step(tmp_path):
    """The compute column's step costs: every options dict becomes its model and is stepped (here: the distilled
    run and its student alone); a model that cannot train would raise."""
    import sys
    sys.path.insert(0, os.path.join(REPO_ROOT, 'benchmarks'))
    import kd_ablation
    from spikerir_plugin.models.spikerir_distill_model import student_alone_options
    opt = tiny_options(tmp_path)
    costs = kd_ablation.step_costs({'kd': opt, 'alone': student_alone_options(opt)}, steps=1, device='cpu')
    assert set(costs) == {'kd', 'alone'} and all(c > 0 for c in costs.values())
