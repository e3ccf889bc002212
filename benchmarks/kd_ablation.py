"""Distillation at equal compute, with the options that ship: the two-step recipe against the student trained alone
for the same wall time and for the same iterations, every run through basicsr's training pipeline.

    python benchmarks/kd_ablation.py --seeds 0 1 2 --eval report --jobs 2 --workdir /tmp/kd_runs   # the README table
    python benchmarks/kd_ablation.py --iters 2400 --seeds 0 1 --eval report --jobs 2               # 4x the budget

The arms are built from the shipped options files, changed only in size (below) and in the teacher they are given:

    twin      step 1, options/train_SpikerIR_twin_GaussianDenoise_sigma25.yml: the student's analog twin (SpikerIR
              `tiny`, neuron rate, T=1) distilled from the ANN teacher (SpikerIRDistillModel); its network_t (Restormer
              and its release checkpoint) replaced by the teacher trained here; twin iterations = the shipped ratio
              (900000 / 300000 = 3x the student's) unless --twin-iters
    recipe    step 2, options/train_SpikerIR_GaussianDenoise_sigma25.yml: the spiking student (SpikerIR `tiny`, T=4)
              started from the twin (init_from_teacher) and distilled from it (hints + output KD, cosine 1 -> 0.1);
              path.pretrain_network_t = that twin's net_g_latest.pth, param_key_t as shipped (params_ema)
    twin_gt   step 1 without its teacher (student_alone_options: no network_t, no distillation keys, SpikingSRModel):
              the twin trained on the ground truth alone
    chain_gt  step 2 from twin_gt: what the recipe gains without the user's teacher (recipe - chain_gt = the
              teacher's own contribution)
    alone     step 2 without its teacher (student_alone_options): the student alone, the student's iterations
    alone_eq  the same, trained for the recipe's compute: round((twin step x twin iterations + student step x
              iterations) / alone step) iterations, its schedules scaled; step times measured (step_costs) before
              any training and kept in step_costs.json, so a second call trains the same runs
    alone_N   (--alone-iters N ...) the student alone for N iterations: more points of PSNR against compute

Size changes (the only keys changed in either file): train.total_iter with scheduler.T_max and kd_schedule.end_iter
scaled by the same factor; datasets.train.{dataroot_gt, gt_size (--gt-size, 48), batch_size_per_gpu (--batch, 8),
num_worker_per_gpu 0, persistent_workers false}; datasets.val.{dataroot_gt, name}; val.val_freq, logger (print and
checkpoint frequency, no tensorboard), manual_seed (the run's seed), num_gpu; and for step 1 network_t /
path.pretrain_network_t (the teacher). Variants (named on the command line, in results.json and the table header;
apply_variants): --preset, --twin-neuron, --student-neuron, --hint-weight and --hints (every neuron's rate or every
tdBN's output, paired by name with the twin's layer); --twin-finetune adds arm twin_ft between the twin and step 2
(finetune_options). Every other key (model_type, networks, AdamW lr 1e-3 and weight
decay 1e-4, L1 + 0.1 FFT, ema_decay 0.999 with the models' EMA warm-up, KD and hint keys, dataset_enlarge_ratio,
flips and rotations) is the shipped file's.

The teacher: an ANN the user is assumed to have, here NAFNet width 16 (spikerir_plugin.demo.TEACHER_NET; another
width with --teacher-width) trained once by basicsr's SRModel on the same crops (--teacher-iters, batch 8, lr 2e-3);
its training is not counted in the compute (the user has it). The twin's training is counted.

Data: clean 96x96 crops of four scikit-image photos (the demo's training photos), Gaussian noise sigma 25 drawn on
the fly; two held-out sets of 96x96 crops with a fixed noise draw: `tune` (the demo's validation photos) and
`report` (four other photos, never used to choose anything: the reported numbers).

Output (under --workdir): the table on the console (arm, iterations, compute and measured wall time, PSNR with the
raw weights `params` and the EMA weights `params_ema`, mean +- std over seeds, paired gains), results.json,
curves.png (validation PSNR against compute: the validations of each run's log, the chains shifted by their twin's
compute) and per run its options file, training log and scores. Trained runs are kept (a run's folder is named by a
digest of everything its training depends on): a second call, e.g. with more seeds or another --eval, trains only
what is missing, and a run stopped part-way resumes from its last checkpoint (one at every validation).
"""
import argparse
import copy
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from spikerir_plugin.recipes import (rescale_iterations, resized, step_costs,  # noqa: E402,F401
                                     with_untrained_teachers)
from spikerir_plugin.utils import console  # noqa: E402

SHIPPED_TWIN = 'options/train_SpikerIR_twin_GaussianDenoise_sigma25.yml'  # step 1
SHIPPED_STUDENT = 'options/train_SpikerIR_GaussianDenoise_sigma25.yml'  # step 2
SIGMA = 25
TUNE_PHOTOS = ('coffee', 'camera')  # the demo's validation photos
REPORT_PHOTOS = ('motorcycle', 'coins', 'brick', 'clock')  # never used to choose: the reported numbers
CROP = 96
PARAM_KEYS = ('params', 'params_ema')
ARMS = ('twin', 'recipe', 'alone', 'alone_eq', 'twin_gt', 'chain_gt')


# ---------------------------------------------------------------------------------------------- options
def load_options(path):
    with open(os.path.join(REPO, path)) as f:
        return yaml.safe_load(f)


def prepare_run_options(opt, name, seed, iters, curve_points, device):
    opt = copy.deepcopy(opt)
    opt['name'] = name
    opt['manual_seed'] = int(seed)
    opt['num_gpu'] = 1 if device == 'cuda' else 0
    val_freq = max(iters // curve_points, 1)
    opt['val'] = dict(opt.get('val') or {}, val_freq=val_freq, save_img=False)
    # checkpoints at least every tenth of the run: a stopped run resumes (--auto_resume) from its last one
    opt['logger'] = dict(opt.get('logger') or {}, print_freq=max(iters // 50, 1),
                         save_checkpoint_freq=min(val_freq, max(iters // 10, 1)), use_tb_logger=False,
                         wandb={'project': None, 'resume_id': None})
    opt['path'] = dict(opt.get('path') or {}, resume_state=None)
    return opt


def digest(obj):
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


def training_key(run_opt):
    """What a run's training depends on: everything but validation and logging (a trained run is scored on any
    held-out set later without training again)."""
    return digest({k: (v if k != 'datasets' else {d: s for d, s in v.items() if not d.startswith('val')})
                   for k, v in run_opt.items() if k not in ('val', 'logger')})


def write_json(path, obj):
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=1, default=str)
    os.replace(tmp, path)


def write_crops(folder, photos, grid):
    """CROPxCROP crops on a grid x grid lattice of each photo (the demo's writer); written once."""
    from spikerir_plugin import demo
    if os.path.isdir(folder) and os.listdir(folder):
        return folder
    return demo.write_demo_images(folder, photos, CROP, grid)


def child_env(threads, device):
    env = dict(os.environ)
    env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
    env['OMP_NUM_THREADS'] = env['MKL_NUM_THREADS'] = str(threads)
    if device == 'cpu':
        env['CUDA_VISIBLE_DEVICES'] = ''
    return env


class LiveTrainings:
    """The training processes running now, so that a stopped harness (Ctrl-C, SIGTERM) stops them too: they run in
    a session of their own (a terminal's Ctrl-C does not reach them) from worker threads (where no
    KeyboardInterrupt arrives)."""
    lock = threading.Lock()
    procs = set()

    @classmethod
    def stop_all(cls):
        with cls.lock:
            procs = list(cls.procs)
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            proc.wait()


def train(opt, run_dir, threads, device):
    """One training run through basicsr's pipeline (spikerir_plugin.train) in ``run_dir``; log in train.log.

    A run stopped part-way (the harness stopped, the machine gone) continues from its last checkpoint on the next
    call (basicsr's --auto_resume, exact in the plugin's models); its log is appended to, and the seconds spent in
    each piece are summed in wall_s.json. A run with no checkpoint to resume from starts afresh, its log and wall
    time too. Returns the measured wall time of the whole run."""
    options = os.path.join(run_dir, 'options.yml')
    with open(options, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    wall_path = os.path.join(run_dir, 'wall_s.json')
    states = os.path.join(run_dir, 'experiments', opt['name'], 'training_states')
    resuming = os.path.isdir(states) and any(name.endswith('.state') for name in os.listdir(states))
    earlier = 0.0
    if resuming and os.path.isfile(wall_path):
        with open(wall_path) as f:
            earlier = float(json.load(f))
    start = time.time()
    with open(os.path.join(run_dir, 'train.log'), 'a' if resuming else 'w') as log:
        proc = subprocess.Popen([sys.executable, '-m', 'spikerir_plugin.train', '-opt', options, '--auto_resume'],
                                cwd=run_dir, env=child_env(threads, device), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        with LiveTrainings.lock:
            LiveTrainings.procs.add(proc)
        try:
            proc.wait()
        finally:
            if proc.poll() is None:  # stopped while waiting: stop the child too, keep its checkpoints
                proc.terminate()
                proc.wait()
            with LiveTrainings.lock:
                LiveTrainings.procs.discard(proc)
            write_json(wall_path, earlier + time.time() - start)
    if proc.returncode != 0:
        raise RuntimeError(f'training failed (exit {proc.returncode}); see {os.path.join(run_dir, "train.log")}')
    return earlier + time.time() - start


_PROGRESS_OR_VALIDATION = re.compile(r'\biter:\s*([\d,]+)|Validation \S+\n\s+# psnr: ([\d.]+)')


def validation_curve(log_path, val_freq, iters):
    """[(iteration, PSNR)] of the validations in a training log (every val_freq iterations, then the final one).
    A validation's iteration is the val_freq multiple at or after the last progress line before it, so a resumed
    run's log (which may skip a validation its stopped piece did not reach) is read right."""
    with open(log_path, errors='replace') as f:
        text = f.read()
    points, last_iter = [], 0
    for progress, psnr in _PROGRESS_OR_VALIDATION.findall(text):
        if progress:
            last_iter = int(progress.replace(',', ''))
        else:
            at = min(max(-(-last_iter // val_freq), 1) * val_freq, iters)
            if points and points[-1][0] == at:
                points[-1] = (at, float(psnr))  # a validation repeated at one iteration: the later one
            else:
                points.append((at, float(psnr)))
    return points


# ---------------------------------------------------------------------------------------------- evaluation
def evaluate(opt, net_spec, ckpt, param_key, device):
    """Mean PSNR/SSIM of a checkpoint's ``param_key`` weights (or of the noisy input, net_spec None) on the options'
    validation set, with the options' metrics, as the model's own validation computes them."""
    import torch
    from basicsr.data import build_dataset
    from basicsr.metrics import calculate_metric
    from basicsr.utils import tensor2img
    from spikerir_plugin.inference import inference_network
    from spikerir_plugin.utils.options import network_from_options

    dataset = build_dataset(dict(opt['datasets']['val'], phase='val', scale=opt.get('scale', 1)))
    metrics = opt['val']['metrics']
    net = None
    if net_spec is not None:
        net = inference_network(network_from_options(copy.deepcopy(net_spec), checkpoint=ckpt,
                                                     param_key=param_key).to(device))
    scores = {name: [] for name in metrics}
    with torch.no_grad():
        for i in range(len(dataset)):
            sample = dataset[i]
            lq = sample['lq'][None].to(device)
            out = lq if net is None else net(lq)
            data = {'img': tensor2img(out.cpu()), 'img2': tensor2img(sample['gt'][None])}
            for name, m in metrics.items():
                scores[name].append(calculate_metric(data, m))
    return {name: float(np.mean(v)) for name, v in scores.items()}


# ---------------------------------------------------------------------------------------------- the runs
class Run:
    """One training run: its arm, seed, prepared options, folder (named by a digest of what its training depends
    on) and the runs it needs first (a chain's twin)."""

    def __init__(self, workdir, arm, seed, opt, curve_points, device, deps=()):
        iters = int(opt['train']['total_iter'])
        self.arm, self.seed, self.deps = arm, seed, tuple(deps)
        self.opt = prepare_run_options(opt, f'{arm}_s{seed}', seed, iters, curve_points, device)
        self.dir = os.path.join(workdir, 'runs', f'{arm}-s{seed}-{training_key(self.opt)}')
        self.ckpt = os.path.join(self.dir, 'experiments', self.opt['name'], 'models', 'net_g_latest.pth')
        self.result_path = os.path.join(self.dir, 'result.json')

    @property
    def key(self):
        return (self.arm, self.seed)

    @property
    def trained(self):
        return os.path.isfile(self.result_path)


def run_all(runs, jobs, work):
    """``work(run)`` for every run, ``jobs`` at a time, a run only once the runs it depends on are done (in list
    order otherwise); a run whose dependency failed is skipped. Returns the keys of the failed and skipped runs."""
    pending, done, failed = list(runs), set(), set()
    cond = threading.Condition()

    def worker():
        while True:
            with cond:
                while True:
                    for run in [r for r in pending if any(d in failed for d in r.deps)]:
                        pending.remove(run)
                        failed.add(run.key)
                        console.status(f'skipped {run.arm} seed {run.seed}: a run it needs failed')
                    ready = [r for r in pending if all(d in done for d in r.deps)]
                    if ready or not pending:
                        break
                    cond.wait()
                if not ready:
                    cond.notify_all()
                    return
                run = ready[0]
                pending.remove(run)
            try:
                work(run)
                ok = True
            except Exception as exc:  # keep the other runs going; reported at the end
                console.status(f'FAILED {run.arm} seed {run.seed}: {exc}')
                ok = False
            with cond:
                (done if ok else failed).add(run.key)
                cond.notify_all()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(int(jobs), 1))]
    for t in threads:
        t.start()
    previous = None
    if threading.current_thread() is threading.main_thread():  # SIGTERM stops the runs as Ctrl-C does
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.5)  # (a bare join would keep Ctrl-C from reaching this thread)
    except BaseException:  # Ctrl-C or SIGTERM: no new run starts, the running ones stop (their checkpoints stay)
        with cond:
            pending.clear()
            cond.notify_all()
        LiveTrainings.stop_all()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return failed


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f'signal {signum}')


def train_teacher(workdir, iters, train_dir, val_dir, gt_size, device, width=16):
    """The ANN teacher the user is assumed to have: the demo's NAFNet (width 16, or ``width``) trained by basicsr's
    SRModel (once)."""
    from spikerir_plugin import demo
    opt = demo.teacher_options(iters, train_dir, val_dir, gt_size=gt_size)
    opt['datasets']['train']['io_backend'] = {'type': 'disk'}
    if width != opt['network_g']['width']:  # (the width-16 teacher keeps the options, and so the folder, it had)
        opt['network_g'] = dict(opt['network_g'], width=int(width))
    name = f'teacher-{digest([opt["network_g"], opt["train"], opt["datasets"]["train"]])}'
    run_dir = os.path.join(workdir, 'teachers', name)
    ckpt = os.path.join(run_dir, 'experiments', name, 'models', 'net_g_latest.pth')
    info_path = os.path.join(run_dir, 'teacher.json')
    if not os.path.isfile(info_path):
        opt = prepare_run_options(opt, name, 0, iters, 1, device)
        os.makedirs(run_dir, exist_ok=True)
        console.status(f'training the teacher NAFNet-w{width} for {iters} iterations -> {run_dir}')
        wall_s = train(opt, run_dir, 1, device)
        write_json(info_path, {'iters': iters, 'wall_s': wall_s, 'checkpoint': ckpt})
    with open(info_path) as f:
        info = json.load(f)
    return opt['network_g'], ckpt, info


def step_cost_key(sets, steps, device):
    """What the step costs depend on: the training options (not the held-out set, paths, names or logging)."""
    def training_part(opt):
        part = {k: v for k, v in opt.items() if k not in ('path', 'name', 'val', 'logger')}
        part['datasets'] = {d: s for d, s in opt.get('datasets', {}).items() if not d.startswith('val')}
        return part
    return digest([training_part(opt) for opt in sets.values()] + [steps, device])


def measured_step_costs(workdir, sets, steps, device):
    """Seconds per training step of each options set (step_costs), measured once per configuration and kept in
    step_costs.json, so that alone_eq's iteration count, and with it its run, stays the same across calls."""
    path = os.path.join(workdir, 'step_costs.json')
    cache = {}
    if os.path.isfile(path):
        with open(path) as f:
            cache = json.load(f)
    key = step_cost_key(sets, steps, device)
    if key not in cache:
        # the teachers (a chain's twin among them) need not be trained yet: an untrained one costs the same
        sets = with_untrained_teachers(sets, workdir)
        console.status(f'timing {steps} training steps of {", ".join(sets)} (round robin)')
        cache[key] = step_costs(sets, steps, device)
        write_json(path, cache)
    return cache[key]


def mean_std(values):
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def fmt(ms, sign=False):
    return f'{ms[0]:+6.2f} +- {ms[1]:.2f}' if sign else f'{ms[0]:6.2f} +- {ms[1]:.2f}'


def summarise(results, arms, seeds, compute, fixed, differences, chain):
    """Per arm: mean +- std over its seeds of PSNR/SSIM for both weight sets and of the measured wall time (a
    chain's twins included, ``chain`` as chain_twins gives it); the paired differences the table reports."""
    rows = {}
    for arm in arms:
        per_seed = {s: results[(arm, s)] for s in seeds if (arm, s) in results}
        if not per_seed:
            continue
        row = {'arm': arm, 'seeds': sorted(per_seed), 'iters': next(iter(per_seed.values()))['iters'],
               'compute_s': compute[arm]}
        for key in PARAM_KEYS:
            for metric in ('psnr', 'ssim'):
                values = [r['scores'][key][metric] for r in per_seed.values()]
                row[f'{metric}_{key}'] = mean_std(values)
                row[f'{metric}_{key}_per_seed'] = values
        walls = [sum(results[(a, s)]['wall_s'] for a in chain_of(arm, chain)) for s in per_seed]
        row['wall_s'] = mean_std(walls)
        row['curve'] = mean_curve([r['curve'] for r in per_seed.values()])
        rows[arm] = row

    def paired(a, b, key):
        common = [s for s in seeds if (a, s) in results and ((b, s) in results or b in fixed)]
        if not common:
            return None
        other = ([fixed[b]['psnr']] * len(common) if b in fixed
                 else [results[(b, s)]['scores'][key]['psnr'] for s in common])
        diffs = [results[(a, s)]['scores'][key]['psnr'] - o for s, o in zip(common, other)]
        return {'seeds': common, 'per_seed': diffs, 'mean_std': mean_std(diffs)}

    diffs = {}
    for label, a, b in differences:
        entry = {key: paired(a, b, key) for key in PARAM_KEYS}
        if entry['params'] is not None:
            diffs[label] = entry
    return rows, diffs


CHAIN_TWIN = {'recipe': 'twin', 'chain_gt': 'twin_gt'}  # a chain arm -> the twin it starts from


def chain_twins(args):
    """{arm: the run it starts from}, in the order their compute adds up: with --twin-finetune the recipe starts
    from twin_ft, the twin fine-tuned with the student's quantisation, which starts from twin."""
    if not getattr(args, 'twin_finetune', None):
        return dict(CHAIN_TWIN)
    return {'twin_ft': 'twin', 'recipe': 'twin_ft', 'chain_gt': 'twin_gt'}


def chain_of(arm, chain):
    """``arm`` and the runs it starts from in ``chain`` (chain_twins), itself first (e.g. recipe, twin_ft, twin)."""
    arms = [arm]
    while arms[-1] in chain:
        arms.append(chain[arms[-1]])
    return arms

DIFFERENCES = (  # (label, arm, minus arm or fixed row), paired by seed
    ('recipe - alone_eq (equal compute: the headline)', 'recipe', 'alone_eq'),
    ('recipe - alone (equal student iterations)', 'recipe', 'alone'),
    ('chain_gt - alone_eq (no teacher, vs equal compute)', 'chain_gt', 'alone_eq'),
    ("recipe - chain_gt (the teacher's own contribution)", 'recipe', 'chain_gt'),
    ('recipe - twin (twin -> spiking student)', 'recipe', 'twin'),
    ('recipe - twin_ft (fine-tuned twin -> spiking student)', 'recipe', 'twin_ft'),
    ('twin_ft - twin (the fine-tune)', 'twin_ft', 'twin'),
    ('recipe - teacher (teacher -> spiking student)', 'recipe', 'teacher'),
    ('alone_eq - alone (more iterations alone)', 'alone_eq', 'alone'),
)


def mean_curve(curves):
    if not curves or not all(curves):
        return []
    n = min(len(c) for c in curves)
    return [(curves[0][i][0], float(np.mean([c[i][1] for c in curves]))) for i in range(n)]


def format_table(rows, diffs, fixed, header):
    lines = [header, f'{"":10s}  {"iters":>6s}  {"compute s":>9s}  {"wall s":>13s}  {"PSNR params":>14s}  '
                     f'{"PSNR params_ema":>15s}  seeds']
    for name, scores in fixed.items():
        lines.append(f'{name:10s}  {"":6s}  {"":9s}  {"":13s}  {scores["psnr"]:6.2f}{"":8s}  {"":15s}  '
                     f'{scores.get("note", "")}')
    for arm, r in rows.items():
        wall = f'{r["wall_s"][0]:6.0f} +- {r["wall_s"][1]:<4.0f}'
        lines.append(f'{arm:10s}  {r["iters"]:6d}  {r["compute_s"]:9.1f}  {wall:>13s}  {fmt(r["psnr_params"])}  '
                     f'{fmt(r["psnr_params_ema"]):>15s}  {",".join(map(str, r["seeds"]))}')
    lines.append('paired PSNR differences, dB (mean +- std over the seeds both have): params | params_ema')
    for label, d in diffs.items():
        lines.append(f'  {label:52s} {fmt(d["params"]["mean_std"], True)} | '
                     f'{fmt(d["params_ema"]["mean_std"], True)}  (seeds {",".join(map(str, d["params"]["seeds"]))})')
    lines.append('compute s: iterations x the step time measured round robin before training (a chain: its twin '
                 'included; the teacher, which the user has, not); wall s: measured run time, a chain\'s twin '
                 'included, validations and start-up too')
    return '\n'.join(lines)


def plot_curves(rows, path):
    """Validation PSNR (params_ema, the model's own validation) against compute seconds, the chains starting at
    their twin's compute; the final raw-weight PSNR as a marker."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for arm, r in rows.items():
        if arm in ('twin', 'twin_ft', 'twin_gt') or not r['curve']:
            continue
        per_iter = r['step_s']
        offset = r['compute_s'] - per_iter * r['iters']
        its, vals = zip(*r['curve'])
        line, = ax.plot([offset + per_iter * i for i in its], vals, marker='o', ms=3,
                        ls='--' if arm.startswith('alone') else '-', label=f'{arm} (validation, params_ema)')
        ax.plot([r['compute_s']], [r['psnr_params'][0]], marker='*', ms=10, color=line.get_color(), ls='')
    ax.plot([], [], marker='*', ms=10, color='k', ls='', label='final, raw params (mean over seeds)')
    ax.set_xlabel('training compute (s of one CPU thread; the twin included)')
    ax.set_ylabel('PSNR (dB), mean over seeds')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path + '.tmp.png'
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)
    plt.close(fig)


def harness_data(args, workdir):
    """(the held-out photos, the size keys of every run: crop folders written once under ``workdir``, validation
    set name, crop side, batch) for --train-grid, --eval, --eval-grid, --gt-size and --batch."""
    from spikerir_plugin import demo
    data = os.path.join(workdir, 'datasets')
    train_dir = write_crops(os.path.join(data, f'train-{args.train_grid}'), demo.TRAIN_PHOTOS, args.train_grid)
    photos = TUNE_PHOTOS if args.eval == 'tune' else REPORT_PHOTOS
    val_dir = write_crops(os.path.join(data, f'{args.eval}-{args.eval_grid}'), photos, args.eval_grid)
    return photos, dict(train_dir=train_dir, val_dir=val_dir, val_name=f'photos-{args.eval}', gt_size=args.gt_size,
                        batch=args.batch)


def twin_iterations(args, shipped_twin, shipped_student):
    """--twin-iters, else the shipped files' twin/student ratio times --iters."""
    ratio = int(shipped_twin['train']['total_iter']) / int(shipped_student['train']['total_iter'])
    return args.twin_iters or int(round(ratio * args.iters))


HINT_VARIANTS = ('shipped', 'rates', 'currents')
STUDENT_NEURONS = ('lif', 'plif', 'lif_vth', 'if')


def hint_layers(net_opt, kind):
    """train.hint_layers pairing every layer of one kind of the student with the same-named layer of its twin (same
    layers and names): 'rates', every spiking neuron (the student's spikes averaged over T, a firing rate, against
    the twin's rate activation: layer-wise rate matching as in ANN->SNN conversion); 'currents', every tdBN (most
    are the input current of the neuron that follows; a block's last tdBN and its shortcut's feed the residual sum).
    The hint term sums over the layers, so more layers weigh more (hint_opt.loss_weight is left as shipped)."""
    from spikingjelly.activation_based.layer import ThresholdDependentBatchNorm2d
    from spikerir_plugin.losses.energy_loss import spiking_neuron_types
    from spikerir_plugin.utils.options import network_from_options
    types = {'rates': spiking_neuron_types(), 'currents': (ThresholdDependentBatchNorm2d,)}[kind]
    names = [n for n, m in network_from_options(net_opt).named_modules() if isinstance(m, types)]
    return [[n, n] for n in names]


def apply_variants(args, twin_opt, student_opt):
    """The command line's variants, in place: --preset (both files, and step 2's twin), --twin-neuron (step 1's
    network_g and step 2's network_t), --student-neuron (step 2's network_g, so the alone arms too), --hints (step
    2's train.hint_layers; the alone arms drop them with the other distillation keys), --hint-weight (step 2's
    train.hint_opt.loss_weight)."""
    if args.preset:  # the student and its twin at another size
        for net in (twin_opt['network_g'], student_opt['network_g'], student_opt['network_t']):
            net['preset'] = args.preset
    if args.twin_neuron:
        for net in (twin_opt['network_g'], student_opt['network_t']):
            net['neuron'] = args.twin_neuron
    if args.student_neuron:
        student_opt['network_g']['neuron'] = args.student_neuron
    if args.hints != 'shipped':
        student_opt['train']['hint_layers'] = hint_layers(student_opt['network_g'], args.hints)
    if args.hint_weight is not None:
        student_opt['train']['hint_opt']['loss_weight'] = args.hint_weight


def arm_options(args, workdir, teacher_net, teacher_ckpt, size, extra, chain):
    """Each arm's options (the shipped files sized by ``size``), the measured step costs and each arm's compute:
    (twin iterations, the student's options, {arm: options}, {arm: step s}, {arm: compute s}, the recipe's compute,
    alone_eq's iterations)."""
    from spikerir_plugin.utils.options import student_alone_options
    shipped_twin, shipped_student = load_options(SHIPPED_TWIN), load_options(SHIPPED_STUDENT)
    twin_iters = twin_iterations(args, shipped_twin, shipped_student)
    twin_opt = resized(shipped_twin, twin_iters, **size)
    twin_opt['network_t'] = copy.deepcopy(teacher_net)  # the user's teacher instead of the shipped Restormer
    twin_opt['path']['pretrain_network_t'] = teacher_ckpt
    student_opt = resized(shipped_student, args.iters, **size)
    apply_variants(args, twin_opt, student_opt)
    options = {'twin': twin_opt, 'twin_gt': student_alone_options(twin_opt), 'recipe': student_opt,
               'chain_gt': copy.deepcopy(student_opt), 'alone': student_alone_options(student_opt)}
    timed = ['twin', 'twin_gt', 'recipe', 'alone']
    if args.twin_finetune:
        options['twin_ft'], options['recipe'] = finetune_options(twin_opt, student_opt, args.twin_finetune)
        timed.append('twin_ft')
    costs = measured_step_costs(workdir, {k: options[k] for k in timed}, args.step_cost, args.device)
    costs['chain_gt'] = costs['recipe']
    recipe_compute = sum(costs[a] * int(options[a]['train']['total_iter']) for a in chain_of('recipe', chain))
    eq_iters = max(int(round(recipe_compute / costs['alone'])), 1)
    options['alone_eq'] = rescale_iterations(copy.deepcopy(options['alone']), eq_iters)
    costs['alone_eq'] = costs['alone']
    for n, arm in zip(args.alone_iters, extra):
        options[arm] = rescale_iterations(copy.deepcopy(options['alone']), n)
        costs[arm] = costs['alone']
    compute = {arm: costs[arm] * int(opt['train']['total_iter']) for arm, opt in options.items()}
    for arm, twin in chain.items():
        compute[arm] += compute[twin]
    return twin_iters, student_opt, options, costs, compute, recipe_compute, eq_iters


def finetune_options(twin_opt, student_opt, iters):
    """--twin-finetune: (twin_ft's options, step 2's options). twin_ft is step 1 again for ``iters`` iterations
    (LR and schedules scaled), its network the twin with ``neuron: rate<T>`` (the LIF's rate quantised to the
    student's T steps: a conversion-aware fine-tune), started from the twin's params_ema; step 2 then distils from
    and starts from twin_ft (its network_t the same quantised twin)."""
    steps = int(student_opt['network_g'].get('T', 4))
    ft = rescale_iterations(copy.deepcopy(twin_opt), int(iters))
    ft['network_g']['neuron'] = f'rate{steps}'
    ft['path'].update(param_key_g='params_ema', strict_load_g=True)
    student = copy.deepcopy(student_opt)
    student['network_t']['neuron'] = f'rate{steps}'
    return ft, student


def plan_runs(workdir, options, needed, extra, args, chain):
    """{(arm, seed): Run}: every seed's main arms first (twin, twin_ft, recipe, alone, alone_eq), then the
    teacher-free chain, then the extra students alone; a chain's run depends on the run it starts from (the twin's
    checkpoint is step 2's network_t, twin_ft's network_g)."""
    runs = {}
    for group in (('twin', 'twin_ft', 'recipe', 'alone', 'alone_eq'), ('twin_gt', 'chain_gt'), tuple(extra)):
        for seed in args.seeds:
            for arm in group:
                if arm not in needed:
                    continue
                opt = copy.deepcopy(options[arm])
                deps = ()
                if arm in chain:
                    twin = runs[(chain[arm], seed)]
                    opt['path']['pretrain_network_g' if arm == 'twin_ft' else 'pretrain_network_t'] = twin.ckpt
                    deps = (twin.key,)
                runs[(arm, seed)] = Run(workdir, arm, seed, opt, args.curve_points, args.device, deps)
    return runs


def train_and_score(run, args, eval_lock, results):
    """Train ``run`` (unless a finished one is on disk) and score it on the held-out set; into ``results``."""
    iters = int(run.opt['train']['total_iter'])
    if run.trained:
        with open(run.result_path) as f:
            result = json.load(f)
    else:
        os.makedirs(run.dir, exist_ok=True)
        console.status(f'{time.strftime("%H:%M:%S")} training {run.arm} seed {run.seed} ({iters} it)')
        wall_s = train(run.opt, run.dir, args.threads, args.device)
        result = {'arm': run.arm, 'seed': run.seed, 'iters': iters, 'wall_s': wall_s,
                  'checkpoint': run.ckpt, 'scores': {},
                  'curve': validation_curve(os.path.join(run.dir, 'train.log'), run.opt['val']['val_freq'],
                                            iters), 'curve_set': args.eval}
    scores = result['scores'].get(args.eval)
    if not (isinstance(scores, dict) and all(key in scores for key in PARAM_KEYS)):  # (or scored for one key only)
        with eval_lock:
            result['scores'][args.eval] = {key: evaluate(run.opt, run.opt['network_g'], run.ckpt, key,
                                                         args.device) for key in PARAM_KEYS}
        write_json(run.result_path, result)
    if 'curve' not in result:  # a run another benchmark trained (energy_front, before it wrote this shape)
        result.update(curve=validation_curve(os.path.join(run.dir, 'train.log'), run.opt['val']['val_freq'], iters),
                      curve_set=None)
        write_json(run.result_path, result)
    results[run.key] = dict(result, scores=result['scores'][args.eval])
    console.status(f'{time.strftime("%H:%M:%S")} done {run.arm} seed {run.seed}: PSNR '
                   f'{results[run.key]["scores"]["params"]["psnr"]:.2f} (params) '
                   f'{results[run.key]["scores"]["params_ema"]["psnr"]:.2f} (params_ema)')


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--arms', nargs='+', choices=ARMS, default=list(ARMS),
                        help='arms to train (recipe needs twin, chain_gt needs twin_gt; all: every arm)')
    parser.add_argument('--alone-iters', type=int, nargs='+', default=[],
                        help='also the student alone for these iterations (arms alone_<N>): more compute points')
    parser.add_argument('--iters', type=int, default=600, help="the student's iterations (the 1x budget: 600)")
    parser.add_argument('--twin-iters', type=int, help="the twin's iterations (default: the shipped files' ratio, "
                                                       '900000 / 300000 = 3x --iters)')
    parser.add_argument('--twin-finetune', type=int, metavar='ITERS',
                        help='fine-tune the twin for ITERS iterations with neuron rate<T> (its rate quantised to the '
                             "student's T steps) before step 2 (arm twin_ft; its compute counts in the recipe's)")
    parser.add_argument('--preset', help="the student's and its twin's SpikerIR preset (shipped: tiny)")
    parser.add_argument('--twin-neuron', help="the twin's neuron (shipped: the twin file's network_g.neuron)")
    parser.add_argument('--hint-weight', type=float, help="step 2's hint_opt.loss_weight (shipped: 1; the term sums "
                                                               'over the hint layers)')
    parser.add_argument('--student-neuron', choices=STUDENT_NEURONS, help="the spiking student's neuron (shipped: lif)")
    parser.add_argument('--hints', choices=HINT_VARIANTS, default='shipped',
                        help="step 2's hint layers: shipped (the decoder levels), rates (every neuron's firing rate) "
                             "or currents (every tdBN's output, the next neuron's input)")
    parser.add_argument('--teacher-iters', type=int, default=2000, help='iterations of the NAFNet teacher')
    parser.add_argument('--teacher-width', type=int, default=16, help='width of the NAFNet teacher (16: the demo\'s)')
    parser.add_argument('--gt-size', type=int, default=48, help='training crop side (shipped: 64)')
    parser.add_argument('--batch', type=int, default=8, help='training batch (shipped: 16)')
    parser.add_argument('--train-grid', type=int, default=4, help='training crops per photo side (4: 16 a photo)')
    parser.add_argument('--eval-grid', type=int, default=3, help='held-out crops per photo side (3: 9 a photo)')
    parser.add_argument('--eval', choices=('tune', 'report'), default='tune',
                        help='held-out photos to score on (tune: to choose; report: to report)')
    parser.add_argument('--workdir', default='kd_ablation_work')
    parser.add_argument('--out', default='results.json', help='results file under --workdir (curves: the same '
                                                              'name with results -> curves, .png)')
    parser.add_argument('--jobs', type=int, default=1, help='runs in parallel (each with --threads threads)')
    parser.add_argument('--threads', type=int, default=1, help='CPU threads per run')
    parser.add_argument('--device', choices=('cpu', 'cuda'), default='cpu')
    parser.add_argument('--curve-points', type=int, default=6, help='validations per run (for curves.png)')
    parser.add_argument('--step-cost', type=int, default=40, help='timed training steps per arm (compute)')
    return parser


# ------------------------------------------------------------------ scripts that call this harness several times
def driver_options(parser, argv, owned, why):
    """(the script's args, the options it passes on to this harness, those options as the harness parses them) for
    a script that calls main() once per configuration (teacher_strength.py, kd_scaling.py): the harness's own
    errors for a bad option, and ``parser.error('--<option> <why>')`` for any of ``owned`` (the harness's dests the
    script sets itself) given in any spelling argparse takes, an abbreviation or the default value included; all
    before any training."""
    args, passed = parser.parse_known_args(argv)
    harness = build_parser().parse_args(passed)
    unset = object()
    probe = build_parser()
    probe.set_defaults(**dict.fromkeys(owned, unset))
    given = vars(probe.parse_args(passed))
    for dest in owned:
        if given[dest] is not unset:
            parser.error(f'--{dest.replace("_", "-")} {why}')
    return args, passed, harness


def main_per_config(configs, label, argv):
    """main(argv(config)) for each config in turn, announced as label(config): ([(config, its output)], the
    failures as 'label: why'); a failed call does not stop the others."""
    done, failed = [], []
    for config in configs:
        console.status(label(config))
        try:
            done.append((config, main(argv(config))))
        except SystemExit as stop:
            failed.append(f'{label(config)}: {stop}')
    return done, failed


def main(argv=None):
    args = build_parser().parse_args(argv)

    import spikerir_plugin  # noqa: F401  (registers the plugin's archs, datasets, models)
    import torch
    torch.set_num_threads(args.threads)
    workdir = os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    extra = [f'alone_{n}' for n in args.alone_iters]
    chain = chain_twins(args)
    needed = {run for a in args.arms for run in chain_of(a, chain)} | set(extra)
    order = [a for a in ('twin', 'twin_ft') + ARMS[1:] if a in needed] + extra

    photos, size = harness_data(args, workdir)
    train_dir, val_dir = size['train_dir'], size['val_dir']
    teacher_net, teacher_ckpt, teacher_info = train_teacher(workdir, args.teacher_iters, train_dir, val_dir,
                                                            args.gt_size, args.device, args.teacher_width)

    twin_iters, student_opt, options, costs, compute, recipe_compute, eq_iters = arm_options(
        args, workdir, teacher_net, teacher_ckpt, size, extra, chain)
    console.status('step s: ' + ', '.join(f'{k} {v:.3f}' for k, v in costs.items()) +
                   f'; alone_eq: {eq_iters} iterations (the recipe\'s {recipe_compute:.0f} s)')

    runs = plan_runs(workdir, options, needed, extra, args, chain)
    todo = [r for r in runs.values() if not r.trained]
    console.status(f'{len(runs)} runs ({len(runs) - len(todo)} already trained); student {args.iters} it, '
                   f'twin {twin_iters} it; logs under {os.path.join(workdir, "runs")}')
    eval_lock = threading.Lock()
    results = {}

    failed = run_all(list(runs.values()), args.jobs, lambda run: train_and_score(run, args, eval_lock, results))

    fixed = {'noisy': evaluate(student_opt, None, None, None, args.device),
             'teacher': dict(evaluate(student_opt, teacher_net, teacher_ckpt, 'params', args.device),
                             note=f'NAFNet-w{args.teacher_width}, {args.teacher_iters} it by SRModel (given: not in '
                                  f'compute; {teacher_info["wall_s"]:.0f} s)')}
    differences = DIFFERENCES + tuple((f'recipe - {arm} (the student alone, {n} it)', 'recipe', arm)
                                      for n, arm in zip(args.alone_iters, extra))
    rows, diffs = summarise(results, order, args.seeds, compute, fixed, differences, chain)
    for arm, r in rows.items():
        r['step_s'] = costs[arm]
    header = (f'KD at equal compute, shipped options ({SHIPPED_TWIN} -> {SHIPPED_STUDENT}), sized: student '
              f'{args.iters} it, twin {twin_iters} it, {args.gt_size}x{args.gt_size} crops, batch {args.batch}; '
              f'{args.eval} photos ({", ".join(photos)}, {len(os.listdir(val_dir))} crops), sigma {SIGMA}'
              + ''.join(f'; {flag} {value}' for flag, value in (('preset', args.preset),
                                                                 ('twin neuron', args.twin_neuron),
                                                                 ('twin fine-tune it', args.twin_finetune),
                                                                 ('student neuron', args.student_neuron),
                                                                 ('hints', args.hints != 'shipped' and args.hints),
                                                                 ('hint weight', args.hint_weight))
                      if value))
    table = format_table(rows, diffs, fixed, header)
    console.info('\n' + table)
    out = {'iters': args.iters, 'twin_iters': twin_iters, 'alone_eq_iters': eq_iters, 'seeds': args.seeds,
           'eval': args.eval, 'step_s': costs, 'compute_s': compute, 'teacher': teacher_info, 'fixed': fixed,
           'arms': rows, 'differences': diffs, 'table': table, 'failed': sorted(map(list, failed)),
           'shipped': {'twin': SHIPPED_TWIN, 'student': SHIPPED_STUDENT},
           'command': ' '.join([os.path.basename(sys.executable)] + sys.argv)}
    results_path = os.path.join(workdir, args.out)
    curves_path = os.path.splitext(results_path)[0].replace('results', 'curves') + '.png'
    write_json(results_path, out)
    if rows:
        plot_curves(rows, curves_path)
    console.info(f'\nresults: {results_path}; curves: {curves_path}')
    if failed:
        raise SystemExit(f'{len(failed)} run(s) failed or skipped: {sorted(failed)}')
    return out


if __name__ == '__main__':
    main()
