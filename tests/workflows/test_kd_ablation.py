"""benchmarks/kd_ablation.py end to end on a tiny configuration of the shipped options files (4 student iterations,
16x16 crops, batch 2, one crop a photo): every arm trains through basicsr's pipeline with its own model, from the
shipped file changed only in the documented size keys; the chains start from their own twin; the compute-matched
student alone gets the recipe's compute; a second call trains nothing again; a stopped run resumes."""
import copy
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import PYTHON, REPO_ROOT, subprocess_env

sys.path.insert(0, os.path.join(REPO_ROOT, 'benchmarks'))
import kd_ablation  # noqa: E402

TINY = ['--seeds', '0', '--iters', '4', '--teacher-iters', '4', '--gt-size', '16', '--batch', '2', '--train-grid',
        '1', '--eval-grid', '1', '--jobs', '2', '--curve-points', '2', '--step-cost', '1']
MODELS = {'twin': 'SpikerIRDistillModel', 'recipe': 'SpikerIRDistillModel', 'chain_gt': 'SpikerIRDistillModel',
          'twin_gt': 'SpikingSRModel', 'alone': 'SpikingSRModel', 'alone_eq': 'SpikingSRModel'}


def shipped(path):
    with open(os.path.join(REPO_ROOT, path)) as f:
        return yaml.safe_load(f)


def without_size_keys(opt, teacher_replaced):
    """The options less the keys the harness may change (its docstring's list)."""
    opt = copy.deepcopy(opt)
    for key in ('name', 'manual_seed', 'num_gpu', 'val', 'logger'):
        opt.pop(key, None)
    opt['train'].pop('total_iter')
    opt['train']['scheduler'].pop('T_max')
    (opt['train'].get('kd_schedule') or {}).pop('end_iter', None)
    for key in ('dataroot_gt', 'gt_size', 'batch_size_per_gpu', 'num_worker_per_gpu', 'persistent_workers'):
        opt['datasets']['train'].pop(key, None)
    for key in ('dataroot_gt', 'name'):
        opt['datasets']['val'].pop(key)
    opt['path'].pop('resume_state', None)
    opt['path'].pop('pretrain_network_t', None)
    if teacher_replaced:
        opt.pop('network_t')
    return opt


def test_harness_trains_the_shipped_recipe_and_its_controls_at_equal_compute(tmp_path):
    from spikerir_plugin.utils.options import student_alone_options
    workdir = tmp_path / 'work'
    cmd = [PYTHON, os.path.join(REPO_ROOT, 'benchmarks', 'kd_ablation.py'), *TINY, '--workdir', str(workdir)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    runs = {}
    for run in (workdir / 'runs').iterdir():
        arm = run.name.split('-s0-')[0]
        log, = run.glob('experiments/*/train_*.log')
        runs[arm] = (yaml.safe_load((run / 'options.yml').read_text()), log.read_text(),
                     json.loads((run / 'result.json').read_text()), run)
    assert set(runs) == set(MODELS)
    for arm, (opt, log, result, _) in runs.items():
        assert f'Model [{MODELS[arm]}] is created' in log, arm
        assert ('l_kd:' in log) == (MODELS[arm] == 'SpikerIRDistillModel'), arm
        assert set(result['scores']['tune']) == {'params', 'params_ema'}
        # the schedules follow the run's iterations
        assert opt['train']['scheduler']['T_max'] == opt['train']['total_iter'] == result['iters']
        assert opt['datasets']['train']['gt_size'] == 16 and opt['datasets']['train']['batch_size_per_gpu'] == 2

    # every run is a shipped file changed only in size (and step 1 in its teacher)
    twin_file, student_file = shipped(kd_ablation.SHIPPED_TWIN), shipped(kd_ablation.SHIPPED_STUDENT)
    expected = {'twin': (twin_file, True), 'twin_gt': (student_alone_options(twin_file), False),
                'recipe': (student_file, False), 'chain_gt': (student_file, False),
                'alone': (student_alone_options(student_file), False),
                'alone_eq': (student_alone_options(student_file), False)}
    for arm, (source, teacher_replaced) in expected.items():
        assert without_size_keys(runs[arm][0], teacher_replaced) == without_size_keys(source, teacher_replaced), arm
    assert runs['twin'][0]['network_t']['type'] == 'NAFNet'
    assert runs['recipe'][0]['train']['kd_schedule']['end_iter'] == 4
    assert runs['twin'][0]['train']['total_iter'] == 12  # the shipped 900000 / 300000 ratio

    # each chain starts from its own twin's checkpoint (the key the shipped file names)
    assert runs['recipe'][0]['path']['pretrain_network_t'] == runs['twin'][2]['checkpoint']
    assert runs['chain_gt'][0]['path']['pretrain_network_t'] == runs['twin_gt'][2]['checkpoint']
    assert 'Student initialised from the teacher' in runs['recipe'][1]

    # the student alone at equal compute: the recipe's step-time compute over the student alone's step time
    result = json.loads((workdir / 'results.json').read_text())
    step = result['step_s']
    recipe_compute = step['twin'] * 12 + step['recipe'] * 4
    assert result['alone_eq_iters'] == max(round(recipe_compute / step['alone']), 1)
    assert runs['alone_eq'][2]['iters'] == result['alone_eq_iters']
    assert result['compute_s']['recipe'] == pytest.approx(recipe_compute)
    arms = result['arms']
    assert arms['chain_gt']['wall_s'][0] == pytest.approx(runs['chain_gt'][2]['wall_s'] + runs['twin_gt'][2]['wall_s'])
    diff = result['differences']['recipe - alone_eq (equal compute: the headline)']['params']
    assert diff['per_seed'] == [runs['recipe'][2]['scores']['tune']['params']['psnr']
                                - runs['alone_eq'][2]['scores']['tune']['params']['psnr']]

    # the table: a compute and a wall-time column for every arm
    table = proc.stdout[proc.stdout.index('KD at equal compute'):]
    for arm in MODELS:
        assert re.search(rf'^{arm}\s+\d+\s+[\d.]+\s+\d+ \+- \d+\s+[\d.]+ \+- [\d.]+\s+[\d.]+ \+- [\d.]+\s+0$', table,
                         re.M), table
    assert (workdir / 'curves.png').stat().st_size > 0

    assert re.search(r'^[\d:]+ training twin seed 0', proc.stderr, re.M) and 'training the teacher' in proc.stderr
    # a second call reuses every trained run and the measured step times
    again = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert '6 runs (6 already trained)' in again.stderr  # progress lines: stderr; the table: stdout
    assert not re.search(r'^[\d:]+ training ', again.stderr, re.M) and 'training the teacher' not in again.stderr
    assert json.loads((workdir / 'results.json').read_text())['alone_eq_iters'] == result['alone_eq_iters']

    # a run stopped part-way continues from its last checkpoint (one at every validation) to the same weights
    import torch
    opt, _, done, run_dir = runs['alone']
    stopped = tmp_path / 'stopped'
    shutil.copytree(run_dir, stopped)
    exp = stopped / 'experiments' / opt['name']
    last = opt['train']['total_iter']
    assert (exp / 'training_states' / f'{opt["val"]["val_freq"]}.state').is_file()
    for path in (exp / 'training_states' / f'{last}.state', exp / 'models' / f'net_g_{last}.pth',
                 exp / 'models' / 'net_g_latest.pth'):
        path.unlink()
    (stopped / 'wall_s.json').write_text('100.0')
    wall_s = kd_ablation.train(opt, str(stopped), 1, 'cpu')
    assert wall_s > 100.0
    assert 'Resuming training from epoch' in (stopped / 'train.log').read_text()
    resumed = torch.load(exp / 'models' / 'net_g_latest.pth', map_location='cpu')
    original = torch.load(done['checkpoint'], map_location='cpu')
    for key in ('params', 'params_ema'):
        for name, value in original[key].items():
            assert torch.equal(resumed[key][name], value), (key, name)


class FakeRun:
    def __init__(self, arm, deps=()):
        self.arm, self.seed, self.deps = arm, 0, tuple((d, 0) for d in deps)

    @property
    def key(self):
        return (self.arm, 0)


def test_run_all_runs_dependencies_first_and_skips_what_a_failure_blocks():
    order = []

    def work(run):
        if run.arm == 'twin_gt':
            raise RuntimeError('boom')
        order.append(run.arm)

    runs = [FakeRun('recipe', ['twin']), FakeRun('twin'), FakeRun('alone'), FakeRun('chain_gt', ['twin_gt']),
            FakeRun('twin_gt')]
    failed = kd_ablation.run_all(runs, 2, work)
    assert failed == {('twin_gt', 0), ('chain_gt', 0)}
    assert sorted(order) == ['alone', 'recipe', 'twin'] and order.index('twin') < order.index('recipe')


def test_validation_curve_reads_each_validations_iteration_from_the_progress_before_it(tmp_path):
    """A resumed run's log: the piece stopped after its checkpoint at 40 but before validating there, so the
    resumed piece's first validation is at 60; a validation is placed by the last progress line before it."""
    def progress(i):
        return f'[run..][epoch:  0, iter: {i:>7,}, lr:(1e-3,)] l_pix: 0.1\n'

    def validation(psnr):
        return f'Validation photos\n\t # psnr: {psnr:.4f}\tBest: {psnr:.4f} @ 20 iter\n'

    log = tmp_path / 'train.log'
    log.write_text(progress(10) + progress(20) + validation(25.0) + progress(30) + progress(40)
                   + 'Resuming training from epoch: 0, iter: 40.\n' + progress(50) + progress(60) + validation(26.0)
                   + progress(1000) + validation(27.0) + validation(27.5))
    assert kd_ablation.validation_curve(str(log), 20, 1000) == [(20, 25.0), (60, 26.0), (1000, 27.5)]


def test_a_stopped_harness_stops_its_trainings_and_the_next_call_resumes_them(tmp_path):
    """SIGTERM to the harness (as Ctrl-C): the training processes it started (their own session, run from worker
    threads) stop too, keeping their checkpoints; the next call continues the run from the last one."""
    import signal
    import time
    workdir = tmp_path / 'work'
    args = list(TINY)
    args[args.index('--iters') + 1] = '300'
    cmd = [PYTHON, os.path.join(REPO_ROOT, 'benchmarks', 'kd_ablation.py'), *args, '--arms', 'alone',
           '--curve-points', '30', '--workdir', str(workdir)]
    harness = subprocess.Popen(cmd, cwd=tmp_path, env=subprocess_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    states = []
    while time.time() < deadline and not states:
        time.sleep(0.5)
        states = list(workdir.glob('runs/alone-s0-*/experiments/*/training_states/*.state'))
    assert states, f'no checkpoint was written: {harness.poll()}'
    harness.send_signal(signal.SIGTERM)
    _, err = harness.communicate(timeout=120)
    assert harness.returncode != 0
    run_dir, = workdir.glob('runs/alone-s0-*')
    time.sleep(1)
    alive = [p for p in os.listdir('/proc') if p.isdigit()
             and str(run_dir).encode() in open(f'/proc/{p}/cmdline', 'rb').read()] if os.path.isdir('/proc') else []
    assert not alive, 'a training process outlived the harness'
    assert not (run_dir / 'result.json').exists()

    again = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    log = (run_dir / 'train.log').read_text()
    assert 'Resuming training from epoch' in log and log.count('Start training from epoch: 0, iter: 0') == 1
    result = json.loads((run_dir / 'result.json').read_text())
    assert result['iters'] == 300 and result['curve'][-1][0] == 300


def test_variants_reach_step_2_and_the_student_alone_keeps_the_neuron_but_not_the_hints():
    from spikerir_plugin.utils.options import student_alone_options
    args = kd_ablation.build_parser().parse_args(['--student-neuron', 'plif', '--hints', 'rates', '--hint-weight',
                                                  '0.25'])
    twin, student = shipped(kd_ablation.SHIPPED_TWIN), shipped(kd_ablation.SHIPPED_STUDENT)
    kd_ablation.apply_variants(args, twin, student)
    assert twin == shipped(kd_ablation.SHIPPED_TWIN)  # step 1 untouched
    assert student['network_g']['neuron'] == 'plif' and student['network_t'] == shipped(
        kd_ablation.SHIPPED_STUDENT)['network_t']
    assert student['train']['hint_layers'] == kd_ablation.hint_layers(student['network_g'], 'rates')
    assert student['train']['hint_opt']['loss_weight'] == 0.25
    alone = student_alone_options(student)
    assert alone['network_g']['neuron'] == 'plif' and 'hint_layers' not in alone['train']
    with pytest.raises(SystemExit):  # a misspelt neuron is refused by the parser, before anything is trained
        kd_ablation.build_parser().parse_args(['--student-neuron', 'pliff'])


@pytest.mark.parametrize('kind, layers', [('rates', 17), ('currents', 23)])  # the counts benchmarks/README cites
def test_hint_variants_pair_every_layer_of_their_kind_with_the_twins_layer_of_the_same_name(kind, layers):
    import torch
    from spikingjelly.activation_based.layer import ThresholdDependentBatchNorm2d

    from spikerir_plugin.archs.neurons import RateActivation, StatelessLIFNode
    from spikerir_plugin.models.feature_hints import FeatureTap
    from spikerir_plugin.utils.options import network_from_options
    from spikerir_plugin.utils.snn import time_mean
    opt = shipped(kd_ablation.SHIPPED_STUDENT)
    pairs = kd_ablation.hint_layers(opt['network_g'], kind)
    assert len(pairs) == layers
    student, twin = network_from_options(opt['network_g']), network_from_options(opt['network_t'], 'network_t')
    want = {'rates': (StatelessLIFNode, RateActivation),
            'currents': (ThresholdDependentBatchNorm2d, ThresholdDependentBatchNorm2d)}[kind]
    assert [n for n, m in student.named_modules() if isinstance(m, want[0])] == [s for s, _ in pairs]
    assert all(s == t and isinstance(dict(twin.named_modules())[t], want[1]) for s, t in pairs)
    # the model's taps read every pair with the shapes of the twin's features (identity adapters, as shipped)
    x = torch.rand(1, 3, 16, 16)
    taps = FeatureTap(student, [s for s, _ in pairs], 'student'), FeatureTap(twin, [t for _, t in pairs], 'teacher')
    (_, s_feats), (_, t_feats) = (tap.run(net, x) for tap, net in zip(taps, (student, twin)))
    assert [time_mean(f).shape for f in s_feats] == [time_mean(f).shape for f in t_feats]  # (the twin: T = 1)


def test_twin_finetune_quantises_the_twin_from_its_checkpoint_and_step_2_starts_from_it(tmp_path):
    workdir = tmp_path / 'work'
    cmd = [PYTHON, os.path.join(REPO_ROOT, 'benchmarks', 'kd_ablation.py'), *TINY, '--arms', 'recipe',
           '--twin-finetune', '2', '--workdir', str(workdir)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = {}
    for run in (workdir / 'runs').iterdir():
        log, = run.glob('experiments/*/train_*.log')
        runs[run.name.split('-s0-')[0]] = (yaml.safe_load((run / 'options.yml').read_text()), log.read_text(),
                                           json.loads((run / 'result.json').read_text()))
    assert set(runs) == {'twin', 'twin_ft', 'recipe'}
    (twin, _, twin_result), (ft, ft_log, ft_result), (recipe, recipe_log, _) = (runs[a] for a in
                                                                                ('twin', 'twin_ft', 'recipe'))
    # twin_ft: step 1 again, the student's quantisation (T=4) in its neuron, from the twin's EMA weights
    assert ft['network_g']['neuron'] == 'rate4' and twin['network_g']['neuron'] == 'rate'
    assert ft['path']['pretrain_network_g'] == twin_result['checkpoint'] and ft['path']['param_key_g'] == 'params_ema'
    assert ft['network_t'] == twin['network_t'] and ft['train']['total_iter'] == ft_result['iters'] == 2
    assert f"Loaded network_g SpikerIR from {twin_result['checkpoint']} [params_ema]" in ft_log
    # step 2 distils from and starts from the fine-tuned twin, with the same quantised network
    assert recipe['path']['pretrain_network_t'] == ft_result['checkpoint']
    assert recipe['network_t']['neuron'] == 'rate4' and 'Student initialised from the teacher' in recipe_log
    result = json.loads((workdir / 'results.json').read_text())
    step = result['step_s']
    assert result['compute_s']['recipe'] == pytest.approx(step['twin'] * 12 + step['twin_ft'] * 2 + step['recipe'] * 4)
    assert result['arms']['recipe']['wall_s'][0] == pytest.approx(
        sum(runs[a][2]['wall_s'] for a in ('twin', 'twin_ft', 'recipe')))
    assert 'twin_ft - twin (the fine-tune)' in result['differences']
