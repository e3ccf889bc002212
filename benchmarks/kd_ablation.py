"""Distillation ablation: the student trained alone against distillation variants, at equal iterations, equal data
and equal seeds, every run through basicsr's training pipeline and SpikerIRDistillModel.

    python benchmarks/kd_ablation.py                                   # demo photo set, built-in variants
    python benchmarks/kd_ablation.py --only chain_kd alone_2x --seeds 0 1 2 --eval report
    python benchmarks/kd_ablation.py --opt my_kd.yml --variants my_variants.yml --iters 5000 --jobs 4

For each variant the harness builds two option sets from one: the variant (a patch on the base distillation options)
and the same run without a teacher (`student_alone_options`: no network_t, no distillation keys, model
SpikingSRModel). Both train for the same iterations on the same batches (the model keeps the data stream independent
of the teacher) from the same seed, and are scored by the same evaluator on the same held-out images. Variants that
share their student-alone run share it.

Data: without --opt, the demo's photo set and recipe (spikerir_plugin/demo.py): clean 96x96 crops of four
scikit-image photos, Gaussian noise sigma 25 drawn on the fly; a NAFNet teacher trained here by basicsr's SRModel
(--teacher-iters); the student's analog twin distilled from it (--twin-iters), the default teacher of the student.
Two held-out sets: `tune` (crops of the demo's validation photos, used to choose variants) and `report` (crops of
four other photos, used only to report the chosen ones). With --opt, any distillation options file: its teacher,
its data, its first validation set.

Variants (--variants FILE, YAML; the built-ins below are the default): name -> patch. A patch is merged into the
options (mappings merge key by key, a mapping with a `type` replaces the old one whole, `~` deletes a key); a
string 'iters' or '<f>*iters' becomes that many iterations. Extra keys of a patch:
    alone: true        a control: the patched run without its teacher (compared with the default student alone)
    iters: N           this variant trains N iterations, its schedules scaled (e.g. a student alone given the
                       compute another variant spends on its teacher)
    teacher: ...       demo data only: `ann` (the NAFNet teacher itself), or keys replacing the default teacher's:
                       `network`, `iters`, `distil` (a patch on the demo's twin options: trained by
                       SpikerIRDistillModel from the ANN teacher; `~`: by SRModel on the ground truth), `train`.
                       Each teacher is trained once and reused.

Output (under --workdir): one table on the console (noisy input, teachers, student alone, each variant: mean +- std
PSNR/SSIM over seeds and the paired gain over the student alone), results.json, curves.png (validation PSNR against
iteration: alone and the best variants), and per run its options file, training log and scores. Trained runs are
kept: a second call with more variants or another --eval trains only what is missing.
"""
import argparse
import concurrent.futures
import copy
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time

import numpy as np
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

SIGMA = 25
TUNE_PHOTOS = ('coffee', 'camera')  # the demo's validation photos: variants are chosen on these
REPORT_PHOTOS = ('motorcycle', 'coins', 'brick', 'clock')  # never used to choose: the reported numbers
CROP, TRAIN_GRID, EVAL_GRID = 96, 4, 3
TRAIN_SIDE = 48  # training crop side (the demo trains on 32x32 to fit its time budget)

# The built-in variants (patches on the demo's distillation options, spikerir_plugin/demo.py:student_options).
VARIANTS = {
    # the shipped recipe (the demo's): ANN teacher -> analog twin (distilled from it) -> student started from the
    # twin and distilled from it
    'chain_kd': {},
    # the same chain with the twin trained on the ground truth alone: what the ANN teacher adds
    'chain_gt': {'teacher': {'distil': None}},
    # direct distillation from the ANN teacher (1x1 adapters on the decoder levels, output KD): the former recipe
    'kd_ann': {'teacher': 'ann', 'train': {'init_from_teacher': None, 'hint_adapter': None}},
    # the student alone with more iterations: the compute the twin costs, and more
    'alone_long': {'alone': True, 'iters': '1.3333*iters'},
    'alone_2x': {'alone': True, 'iters': '2*iters'},
    'alone_2.5x': {'alone': True, 'iters': '2.5*iters'},  # more than the shipped recipe's compute
}


# ---------------------------------------------------------------------------------------------- options
def merge(base, patch):
    """A copy of ``base`` with ``patch`` merged in: mappings key by key, None deletes, other values replace. A
    mapping that names a ``type`` (a loss, a schedule, a network) replaces the old one whole."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict) and 'type' not in value:
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_iters(value, iters):
    """'iters' / '0.25*iters' -> an iteration count; lists and mappings recursively; anything else unchanged."""
    if isinstance(value, dict):
        return {k: resolve_iters(v, iters) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_iters(v, iters) for v in value]
    if isinstance(value, str):
        m = re.fullmatch(r'\s*(?:([\d.]+)\s*\*\s*)?iters\s*', value)
        if m:
            return int(round(float(m.group(1) or 1) * iters))
    return value


def rescale_iterations(opt, iters):
    """Set total_iter to ``iters`` and scale every iteration count of the LR and KD schedules with it."""
    train = opt['train']
    old = int(train['total_iter'])
    scale = iters / old

    def scaled(n):
        return max(1, int(round(n * scale)))

    train['total_iter'] = iters
    sched = train.get('scheduler') or {}
    for key in ('T_max',):
        if key in sched:
            sched[key] = scaled(sched[key])
    for key in ('periods', 'milestones'):
        if key in sched:
            sched[key] = [scaled(n) for n in sched[key]]
    for key in ('kd_schedule', 'hint_schedule'):
        spec = train.get(key) or {}
        for k in ('start_iter', 'end_iter'):
            if spec.get(k) is not None:
                spec[k] = int(round(spec[k] * scale))
        if 'steps' in spec:
            spec['steps'] = [scaled(n) for n in spec['steps']]
    return opt


def prepare_run_options(opt, name, seed, iters, curve_points, device):
    opt = copy.deepcopy(opt)
    opt['name'] = name
    opt['manual_seed'] = int(seed)
    opt['num_gpu'] = 1 if device == 'cuda' else 0
    opt['val'] = dict(opt.get('val') or {}, val_freq=max(iters // curve_points, 1), save_img=False)
    opt['logger'] = dict(opt.get('logger') or {}, print_freq=max(iters // 50, 1), save_checkpoint_freq=iters,
                         use_tb_logger=False, wandb={'project': None, 'resume_id': None})
    opt['path'] = dict(opt.get('path') or {}, resume_state=None)
    for key, ds in opt['datasets'].items():
        if key.startswith('val'):
            ds.setdefault('name', key)
    # only the first validation set is scored and drawn
    first_val = next(k for k in opt['datasets'] if k.startswith('val'))
    opt['datasets'] = {k: v for k, v in opt['datasets'].items() if not k.startswith('val') or k == first_val}
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


# ---------------------------------------------------------------------------------------------- demo data
def write_crops(folder, photos, grid):
    """CROPxCROP crops on a grid x grid lattice of each photo (the demo's writer); written once."""
    from spikerir_plugin import demo
    if os.path.isdir(folder) and os.listdir(folder):
        return folder
    return demo.write_demo_images(folder, photos, CROP, grid)


def demo_base_options(workdir, eval_set, iters):
    """The demo's distillation options on folders under ``workdir`` (clean training crops on disk)."""
    from spikerir_plugin import demo
    data = os.path.join(workdir, 'datasets')
    train_dir = write_crops(os.path.join(data, 'train'), demo.TRAIN_PHOTOS, TRAIN_GRID)
    photos = TUNE_PHOTOS if eval_set == 'tune' else REPORT_PHOTOS
    val_dir = write_crops(os.path.join(data, eval_set), photos, EVAL_GRID)
    opt = demo.student_options(iters, train_dir, val_dir, twin_ckpt=None, gt_size=TRAIN_SIDE)
    opt['datasets']['train']['io_backend'] = {'type': 'disk'}
    opt['datasets']['val']['name'] = f'photos-{eval_set}'
    return opt, train_dir, val_dir, photos


def train_demo_teacher(workdir, spec, train_dir, val_dir, device, threads, ann_spec):
    """Train (once) a teacher on the demo data; returns its checkpoint. By basicsr's SRModel on the ground truth,
    or, with ``distil`` in the spec (a patch on the demo's twin options, {} for none), by SpikerIRDistillModel from
    the ANN teacher ``ann_spec`` (trained first): the demo's analog twin is such a teacher assistant."""
    from spikerir_plugin import demo
    iters = int(spec['iters'])
    distilled = spec.get('distil') is not None
    if distilled:
        ann_ckpt = train_demo_teacher(workdir, ann_spec, train_dir, val_dir, device, threads, ann_spec)
        opt = demo.twin_options(iters, train_dir, val_dir, ann_ckpt, gt_size=TRAIN_SIDE)
        opt['network_t'] = copy.deepcopy(ann_spec['network'])
        opt['train'] = merge(opt['train'], spec['distil'])
    else:
        opt = demo.teacher_options(iters, train_dir, val_dir, gt_size=TRAIN_SIDE)
    opt['datasets']['train']['io_backend'] = {'type': 'disk'}
    opt['network_g'] = copy.deepcopy(spec['network'])
    opt['train'] = merge(opt['train'], spec.get('train') or {})
    TRAINED_TEACHERS[spec_key(spec)] = (opt, iters)
    key = [opt['network_g'], opt['train'], os.path.basename(train_dir)]
    if distilled:
        key += [opt['network_t'], opt['path']['pretrain_network_t']]
    name = f'teacher-{digest(key)}'
    ckpt = os.path.join(workdir, 'teachers', name, 'experiments', name, 'models', 'net_g_latest.pth')
    if not os.path.isfile(ckpt):
        opt = prepare_run_options(opt, name, 0, iters, 1, device)
        run_dir = os.path.join(workdir, 'teachers', name)
        os.makedirs(run_dir, exist_ok=True)
        print(f'training teacher {describe_net(spec["network"])} for {iters} iterations -> {run_dir}', flush=True)
        train(opt, run_dir, threads, device)
    return ckpt


TRAINED_TEACHERS = {}  # spec key -> (training options, iterations) of each teacher trained on the demo data


def spec_key(spec):
    return digest({k: v for k, v in spec.items() if k != 'label'})


def step_costs(option_sets, steps, device):
    """Median seconds of one training step (the model's optimize_parameters on a random batch of the options'
    batch and crop size) per options dict, the models stepped round-robin in this process so that the ratios
    compare like with like on a busy machine."""
    import statistics
    import tempfile
    import torch
    from basicsr.models import build_model
    from spikerir_plugin.utils.options import in_process_train_options
    tmp = tempfile.mkdtemp(prefix='kd_step_cost_')
    models, batches = {}, {}
    for key, opt in option_sets.items():
        opt = in_process_train_options(opt, tmp, device)
        models[key] = build_model(opt)
        ds = opt['datasets']['train']
        shape = (int(ds['batch_size_per_gpu']), 3, int(ds['gt_size']), int(ds['gt_size']))
        batches[key] = {'lq': torch.rand(shape), 'gt': torch.rand(shape)}
    times = {key: [] for key in models}
    for step in range(steps + 1):  # the first round warms up
        for key, model in models.items():
            model.feed_data(batches[key])
            start = time.perf_counter()
            model.optimize_parameters(step + 1)
            if step:
                times[key].append(time.perf_counter() - start)
    return {key: statistics.median(values) for key, values in times.items()}


def teacher_spec(default, ann, patch):
    """A variant's teacher: the default (the demo's twin), `ann` (the ANN teacher itself), or the default with the
    variant's keys (a key set to ~ removed, e.g. `distil: ~` for a twin trained on the ground truth alone)."""
    if patch == 'ann':
        return dict(ann)
    spec = dict(default, **(patch or {}))
    return {k: v for k, v in spec.items() if v is not None}


def teacher_label(spec):
    how = ', distilled from the ANN teacher' if spec.get('distil') is not None else ''
    return f'{describe_net(spec["network"])} ({spec["iters"]} it{how})'


def describe_net(net):
    if net.get('type') == 'NAFNet':
        return f'NAFNet-w{net.get("width", 16)}'
    if net.get('type') == 'SpikerIR':
        twin = ' twin (rate)' if net.get('neuron') == 'rate' else ''
        return f'SpikerIR-{net.get("preset", "tiny")}-T{net.get("T", 4)}{twin}'
    return net.get('type', '?')


# ---------------------------------------------------------------------------------------------- running
def child_env(threads, device):
    env = dict(os.environ)
    env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
    env['OMP_NUM_THREADS'] = env['MKL_NUM_THREADS'] = str(threads)
    if device == 'cpu':
        env['CUDA_VISIBLE_DEVICES'] = ''
    return env


def train(opt, run_dir, threads, device):
    """One training run through basicsr's pipeline (spikerir_plugin.train) in ``run_dir``; log in train.log."""
    options = os.path.join(run_dir, 'options.yml')
    with open(options, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    with open(os.path.join(run_dir, 'train.log'), 'w') as log:
        proc = subprocess.run([sys.executable, '-m', 'spikerir_plugin.train', '-opt', options], cwd=run_dir,
                              env=child_env(threads, device), stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    if proc.returncode != 0:
        raise RuntimeError(f'training failed (exit {proc.returncode}); see {os.path.join(run_dir, "train.log")}')
    return os.path.join(run_dir, 'experiments', opt['name'], 'models', 'net_g_latest.pth')


_ITER = re.compile(r'\[epoch:\s*\d+, iter:\s*([\d,]+)')
_VALID = re.compile(r'Validation (\S+)\n\s+# psnr: ([\d.]+)')


def last_logged_iter(log_path):
    try:
        with open(log_path, errors='replace') as f:
            found = _ITER.findall(f.read()[-20000:])
    except OSError:
        return 0
    return int(found[-1].replace(',', '')) if found else 0


def validation_curve(log_path, val_freq, iters):
    """[(iteration, PSNR)] of the validations in a training log (every val_freq iterations, then the final one)."""
    with open(log_path, errors='replace') as f:
        values = [float(v) for _, v in _VALID.findall(f.read())]
    points = [(min((k + 1) * val_freq, iters), v) for k, v in enumerate(values)]
    return [p for i, p in enumerate(points) if i == 0 or p[0] != points[i - 1][0]]


# ---------------------------------------------------------------------------------------------- evaluation
def evaluate(opt, net_spec, ckpt, which, device, tile=None):
    """Mean PSNR/SSIM of a checkpoint (or of the noisy input, net_spec None) on the options' first validation set,
    with the options' metrics, as the model's own validation computes them."""
    import torch
    from basicsr.archs import build_network
    from basicsr.data import build_dataset
    from basicsr.metrics import calculate_metric
    from basicsr.utils import tensor2img
    from spikerir_plugin.models.tiled_inference import tiled_forward
    from spikerir_plugin.utils.checkpoint import load_weights
    from spikerir_plugin.utils.inference import inference_network

    val_key = next(k for k in opt['datasets'] if k.startswith('val'))
    ds_opt = dict(opt['datasets'][val_key], phase='val', scale=opt.get('scale', 1))
    dataset = build_dataset(ds_opt)
    metrics = (opt.get('val') or {}).get('metrics') or {
        'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}}
    net = None
    if net_spec is not None:
        key = 'params_ema' if which == 'g' else (opt['path'].get('param_key_t', 'params'))
        net = inference_network(load_weights(build_network(copy.deepcopy(net_spec)), ckpt, key, True, which=which)
                                .to(device))
    scores = {name: [] for name in metrics}
    with torch.no_grad():
        for i in range(len(dataset)):
            sample = dataset[i]
            lq = sample['lq'][None].to(device)
            if net is None:
                out = lq
            else:
                out = tiled_forward(net, lq, tile['size'], tile['overlap']) if tile else net(lq)
            data = {'img': tensor2img(out.cpu()), 'img2': tensor2img(sample['gt'][None])}
            for name, m in metrics.items():
                scores[name].append(calculate_metric(data, m))
    return {name: float(np.mean(v)) for name, v in scores.items()}, len(dataset)


# ---------------------------------------------------------------------------------------------- the ablation
class Progress:
    """A tqdm bar over all training iterations of all runs, fed by polling the runs' logs."""

    def __init__(self, total):
        from tqdm import tqdm
        self.bar = tqdm(total=total, unit='it', desc='kd ablation', dynamic_ncols=True)
        self.logs, self.done, self.lock, self.stop = {}, {}, threading.Lock(), False
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def watch(self, log_path, iters):
        with self.lock:
            self.logs[log_path] = (iters, 0)

    def finish(self, log_path, iters):
        with self.lock:
            _, seen = self.logs.pop(log_path, (iters, 0))
            self.bar.update(iters - seen)

    def _poll(self):
        while not self.stop:
            with self.lock:
                for path, (iters, seen) in list(self.logs.items()):
                    now = min(last_logged_iter(path), iters)
                    if now > seen:
                        self.bar.update(now - seen)
                        self.logs[path] = (iters, now)
            time.sleep(2)

    def close(self):
        self.stop = True
        self.bar.close()


arm_teachers = {}  # arm -> label of its teacher (build_arms)


def build_arms(base, variants, iters, teacher_of):
    """({arm name: (options, role, reference arm)}, {teacher label: (network, checkpoint)}): each variant, its
    student-alone run (shared where equal), the default student alone."""
    from spikerir_plugin.models.spikerir_distill_model import student_alone_options
    arms, alone_names, teachers = {}, {}, {}
    arm_teachers.clear()

    def alone_arm(opt):
        alone = student_alone_options(opt)
        key = digest({k: v for k, v in alone.items() if k != 'name'})
        if key not in alone_names:
            label = 'alone' if not alone_names else f'alone [{describe_net(alone["network_g"])}-{key[:4]}]'
            alone_names[key] = label
            arms[label] = (alone, 'alone', None)
        return alone_names[key]

    default_alone = alone_arm(base)
    for name, patch in variants.items():
        patch = resolve_iters(copy.deepcopy(patch), iters)
        teacher = patch.pop('teacher', None)
        own_iters = patch.pop('iters', None)
        without_teacher = patch.pop('alone', False)
        opt = merge(base, patch)
        if without_teacher:  # a control: this variant's student alone (e.g. with more iterations)
            opt = student_alone_options(opt)
        if own_iters is not None:  # e.g. a student alone given the compute a variant spends elsewhere
            opt = rescale_iterations(opt, int(own_iters))
        if opt.get('network_t'):
            opt, label = teacher_of(opt, teacher)
            teachers[label] = (opt['network_t'], opt['path']['pretrain_network_t'])
            arm_teachers[name] = label
            arms[name] = (opt, 'distilled', alone_arm(opt))
        else:  # a control without a teacher (e.g. a larger batch): compared to the default student alone
            opt['model_type'] = opt.get('model_type', 'SpikingSRModel')
            arms[name] = (opt, 'control', default_alone)
    return arms, teachers


def training_compute(rows, arms, label_specs, ann_teacher, steps, device):
    """row['compute']: each arm's training compute relative to the student alone: its iterations times its step
    cost, plus, for a teacher trained here other than the ANN teacher (which a user already has; e.g. the twin),
    that teacher's iterations times its step cost. Step costs: step_costs()."""
    sets = {name: opt for name, (opt, _, _) in arms.items()}
    assistant = {}
    for name, label in arm_teachers.items():
        key = spec_key(label_specs[label])
        if key != spec_key(ann_teacher):
            assistant[name] = key
            sets[f'teacher {key}'] = TRAINED_TEACHERS[key][0]
    costs = step_costs(sets, steps, device)

    def compute(name):
        total = costs[name] * int(arms[name][0]['train']['total_iter'])
        if name in assistant:
            total += costs[f'teacher {assistant[name]}'] * TRAINED_TEACHERS[assistant[name]][1]
        return total

    reference = compute('alone')
    for row in rows:
        row['compute'] = compute(row['arm']) / reference
        row['step_s'] = costs[row['arm']]


def mean_std(values):
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def summarise(arms, results, seeds):
    rows = []
    for name, (opt, role, ref) in arms.items():
        per_seed = results[name]
        row = {'arm': name, 'role': role, 'reference': ref, 'seeds': seeds, 'network_g': opt['network_g']}
        for metric in per_seed[seeds[0]]['scores']:
            row[metric] = mean_std([per_seed[s]['scores'][metric] for s in seeds])
            row[f'{metric}_per_seed'] = [per_seed[s]['scores'][metric] for s in seeds]
        if ref is not None:
            gains = [per_seed[s]['scores']['psnr'] - results[ref][s]['scores']['psnr'] for s in seeds]
            row['gain_psnr'] = mean_std(gains)
            row['gain_psnr_per_seed'] = gains
            spread = max(row['gain_psnr'][1], row['psnr'][1], rows_by(rows, ref)['psnr'][1])
            row['gain_exceeds_2std'] = bool(row['gain_psnr'][0] > 2 * spread) if len(seeds) > 1 else None
        row['wall_s'] = float(np.mean([per_seed[s]['wall_s'] for s in seeds]))
        row['curve'] = mean_curve([per_seed[s]['curve'] for s in seeds])
        rows.append(row)
    return rows


def rows_by(rows, name):
    return next(r for r in rows if r['arm'] == name)


def mean_curve(curves):
    if not curves or not all(curves):
        return []
    n = min(len(c) for c in curves)
    return [(curves[0][i][0], float(np.mean([c[i][1] for c in curves]))) for i in range(n)]


def format_table(rows, fixed, header):
    labels = [name for name, _ in fixed] + [r['arm'] if r['reference'] in (None, 'alone')
                                            else f'{r["arm"]} (vs {r["reference"]})' for r in rows]
    width = max(len(label) for label in labels)
    with_compute = all('compute' in r for r in rows)
    lines = [header, f'{"":{width}s}  {"PSNR dB":>14s}  {"SSIM":>16s}  {"gain dB (paired)":>17s}  {"min/run":>7s}'
                     + ('  compute' if with_compute else '')]
    for name, scores in fixed:
        ssim = f'{scores["ssim"]:.4f}' + ' ' * 10 if 'ssim' in scores else ''
        lines.append(f'{name:{width}s}  {scores["psnr"]:6.2f}{"":8s}  {ssim:>16s}')
    for label, r in zip(labels[len(fixed):], rows):
        psnr = f'{r["psnr"][0]:6.2f} +- {r["psnr"][1]:.2f}'
        ssim = f'{r["ssim"][0]:.4f} +- {r["ssim"][1]:.4f}' if 'ssim' in r else ''
        gain = ''
        if r['reference'] is not None:
            mark = ' *' if r['gain_exceeds_2std'] else '  '  # never with one seed (no spread to compare)
            gain = f'{r["gain_psnr"][0]:+6.2f} +- {r["gain_psnr"][1]:.2f}{mark}'
        compute = f'  {r["compute"]:6.2f}x' if with_compute else ''
        lines.append(f'{label:{width}s}  {psnr:>14s}  {ssim:>16s}  {gain:>17s}  {r["wall_s"] / 60:7.1f}{compute}')
    lines.append('mean +- std over seeds; gain = PSNR minus the student alone of the same seed; '
                 '* gain > 2x the largest std (gain, arm, alone)')
    if with_compute:
        lines.append('compute: training cost relative to the student alone (iterations x measured step time, plus '
                     'a teacher trained here other than the ANN teacher, e.g. the twin)')
    return '\n'.join(lines)


def plot_curves(rows, path, top=3):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    alone = [r for r in rows if r['role'] == 'alone' and r['curve']]
    best = sorted((r for r in rows if r['reference'] is not None and r['curve']),
                  key=lambda r: -r['gain_psnr'][0])[:top]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in alone + best:
        its, vals = zip(*r['curve'])
        ax.plot(its, vals, marker='o', ms=3, lw=2 if r['role'] == 'alone' else 1.4, ls='--' if r['role'] == 'alone'
                else '-', label=r['arm'])
    ax.set_xlabel('iteration')
    ax.set_ylabel('validation PSNR (dB), mean over seeds')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path + '.tmp.png'
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)
    plt.close(fig)


def load_variants(path, only):
    variants = dict(VARIANTS)
    if path:
        with open(path) as f:
            loaded = yaml.safe_load(f) or {}
        if not isinstance(loaded, dict) or not all(isinstance(v, dict) for v in loaded.values()):
            raise ValueError(f'--variants {path}: expected a mapping of variant name -> options patch (a mapping)')
        variants = loaded
    if only:
        unknown = [n for n in only if n not in variants]
        if unknown:
            raise KeyError(f'--only: unknown variants {unknown}; known: {", ".join(variants)}')
        variants = {n: variants[n] for n in only}
    return variants


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--opt', help='distillation options file (default: the demo photo set and recipe)')
    parser.add_argument('--variants', help='YAML file: variant name -> options patch (default: the built-ins)')
    parser.add_argument('--only', nargs='+', help='run only these variants')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--iters', type=int, help='iterations per run (default: 600 on the demo data, else the '
                                                  "options' total_iter)")
    parser.add_argument('--teacher-iters', type=int, default=600, help='demo data: iterations of the ANN teacher')
    parser.add_argument('--twin-iters', type=int, default=2000,
                        help="demo data: iterations of the student's analog twin (the default teacher)")
    parser.add_argument('--eval', choices=('tune', 'report'), default='tune',
                        help='demo data: held-out photos to score on (tune: to choose; report: to report)')
    parser.add_argument('--workdir', default='kd_ablation_work')
    parser.add_argument('--jobs', type=int, default=1, help='runs in parallel')
    parser.add_argument('--threads', type=int, default=1, help='CPU threads per run')
    parser.add_argument('--device', choices=('cpu', 'cuda'), default='cpu')
    parser.add_argument('--curve-points', type=int, default=10, help='validations per run (for curves.png)')
    parser.add_argument('--step-cost', type=int, default=3, help='demo data: timed training steps per arm and '
                        'teacher for the compute column (0: none)')
    args = parser.parse_args(argv)

    import spikerir_plugin  # noqa: F401  (registers the plugin's archs, datasets, models)
    import torch
    torch.set_num_threads(args.threads)
    workdir = os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    variants = load_variants(args.variants, args.only)
    label_specs = {}  # teacher label -> its spec (demo data)

    if args.opt:
        with open(args.opt) as f:
            base = yaml.safe_load(f)
        iters = args.iters or int(base['train']['total_iter'])
        base = rescale_iterations(base, iters)
        if not base.get('network_t'):
            raise ValueError(f'{args.opt}: no network_t; the ablation needs distillation options')
        data_note = f'{args.opt}'
        eval_set = 'val'

        always_scored = ann_teacher = None

        def teacher_of(opt, teacher):
            if teacher is not None:
                raise ValueError('variant key `teacher` works on the demo data only; patch network_t and '
                                 'path.pretrain_network_t instead')
            return opt, describe_net(opt['network_t'])
    else:
        iters = args.iters or 600
        base, train_dir, val_dir, photos = demo_base_options(workdir, args.eval, iters)
        from spikerir_plugin import demo
        ann_teacher = {'network': demo.TEACHER_NET, 'iters': args.teacher_iters}
        default_teacher = {'network': demo.TWIN_NET, 'iters': args.twin_iters, 'distil': {}}  # the demo's recipe
        data_note = (f'demo photos, sigma {SIGMA}; eval {args.eval}: {len(os.listdir(val_dir))} crops of '
                     f'{", ".join(photos)}')
        eval_set = args.eval

        def train_teacher(spec):
            return train_demo_teacher(workdir, spec, train_dir, val_dir, args.device, max(args.threads, 1),
                                      ann_teacher)

        def teacher_of(opt, teacher):
            spec = teacher_spec(default_teacher, ann_teacher, teacher)
            opt['network_t'] = copy.deepcopy(spec['network'])
            opt['path']['pretrain_network_t'] = train_teacher(spec)
            label_specs[teacher_label(spec)] = spec
            return opt, teacher_label(spec)

        # train the teachers the variants need, in parallel, before the students (the ANN teacher first: the
        # twins learn from it); the ANN teacher is always scored, as the reference of the table
        train_teacher(ann_teacher)
        always_scored = (teacher_label(ann_teacher), ann_teacher['network'], train_teacher(ann_teacher))
        specs = {}
        for patch in variants.values():
            patch = resolve_iters(copy.deepcopy(patch), iters)
            if merge(base, {k: v for k, v in patch.items() if k != 'teacher'}).get('network_t'):
                spec = teacher_spec(default_teacher, ann_teacher, patch.get('teacher'))
                specs[digest(spec)] = spec
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
            list(pool.map(train_teacher, specs.values()))

    arms, teachers = build_arms(base, variants, iters, teacher_of)
    jobs = []
    for name, (opt, role, ref) in arms.items():
        run_iters = int(opt['train']['total_iter'])
        for seed in args.seeds:
            run_opt = prepare_run_options(opt, f'{name}_s{seed}', seed, run_iters, args.curve_points, args.device)
            jobs.append((name, seed, run_opt, os.path.join(workdir, 'runs', f'{name}-{training_key(run_opt)}')))

    results = {name: {} for name in arms}
    todo = [j for j in jobs if not os.path.isfile(os.path.join(j[3], 'result.json'))]
    print(f'{len(arms)} arms x {len(args.seeds)} seeds = {len(jobs)} runs of {iters} iterations '
          f'({len(jobs) - len(todo)} already trained); logs under {os.path.join(workdir, "runs")}', flush=True)
    progress = Progress(sum(int(j[2]['train']['total_iter']) for j in todo))
    eval_lock = threading.Lock()
    device = 'cuda' if args.device == 'cuda' else 'cpu'

    def run_one(job):
        name, seed, run_opt, run_dir = job
        iters = int(run_opt['train']['total_iter'])
        result_path = os.path.join(run_dir, 'result.json')
        if os.path.isfile(result_path):
            with open(result_path) as f:
                result = json.load(f)
        else:
            os.makedirs(run_dir, exist_ok=True)
            log = os.path.join(run_dir, 'train.log')
            progress.watch(log, iters)
            start = time.time()
            ckpt = train(run_opt, run_dir, args.threads, args.device)
            progress.finish(log, iters)
            result = {'arm': name, 'seed': seed, 'wall_s': time.time() - start, 'checkpoint': ckpt,
                      'curve': validation_curve(log, run_opt['val']['val_freq'], iters), 'curve_set': eval_set,
                      'scores': {}}
        if eval_set not in result['scores']:
            with eval_lock:
                result['scores'][eval_set] = evaluate(run_opt, run_opt['network_g'], result['checkpoint'], 'g',
                                                      device, (run_opt['val'] or {}).get('tile'))[0]
            write_json(result_path, result)
        return name, seed, result

    failures = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
        for future in concurrent.futures.as_completed([pool.submit(run_one, j) for j in jobs]):
            try:
                name, seed, result = future.result()
                results[name][seed] = dict(result, scores=result['scores'][eval_set])
            except Exception as exc:  # keep the other runs going; report at the end
                failures.append(str(exc))
                progress.bar.write(f'FAILED: {exc}')
    progress.close()
    if failures:
        raise SystemExit(f'{len(failures)} run(s) failed:\n' + '\n'.join(failures))

    fixed_opt = next(iter(arms.values()))[0]
    fixed = [('noisy input', evaluate(fixed_opt, None, None, None, device)[0])]
    if always_scored is not None and always_scored[0] not in teachers:
        teachers = {always_scored[0]: always_scored[1:], **teachers}
    for label, (net, ckpt) in teachers.items():
        fixed.append((f'teacher {label}', evaluate(fixed_opt, net, ckpt, 't', device)[0]))
    rows = summarise(arms, results, args.seeds)
    if args.step_cost and ann_teacher is not None:
        training_compute(rows, arms, label_specs, ann_teacher, args.step_cost, device)
    header = (f'KD ablation: {iters} iterations x seeds {args.seeds}; {data_note}; student '
              f'{describe_net(base["network_g"])}')
    table = format_table(rows, fixed, header)
    print('\n' + table)
    out = {'iters': iters, 'seeds': args.seeds, 'data': data_note, 'eval': args.eval if not args.opt else None,
           'fixed': dict(fixed), 'arms': rows, 'variants': variants, 'table': table,
           'command': ' '.join([os.path.basename(sys.executable)] + sys.argv)}
    write_json(os.path.join(workdir, 'results.json'), out)
    plot_curves(rows, os.path.join(workdir, 'curves.png'))
    print(f'\nresults: {os.path.join(workdir, "results.json")}; curves: {os.path.join(workdir, "curves.png")}')
    return out


if __name__ == '__main__':
    main()
