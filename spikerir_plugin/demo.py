"""The one-command demo (CPU, about 3 minutes on 2 idle cores): ANN teacher -> SpikerIR student on real photos.

1. builds a small Gaussian-denoising set (sigma 25) from the photos bundled with scikit-image: clean training
   crops into an LMDB, held-out validation crops into a folder;
2. times a few training steps of the twin, the distilled student and the student alone, round robin in one
   process, for the comparison at equal compute (beside the teacher's training, so under the trainings' load);
3. trains a small NAFNet teacher with BasicSR's own SRModel and train pipeline;
4. step 1 of the recipe, the shipped options/train_SpikerIR_twin_GaussianDenoise_sigma25.yml: distils the student's
   analog twin (SpikerIR with rate neurons and one time step: an ANN with the student's layers) from the teacher;
5. step 2, the shipped options/train_SpikerIR_GaussianDenoise_sigma25.yml: the spiking SpikerIR student starts from
   the twin's weights and is distilled from it, outputs and features layer for layer;
6. trains the same student without a teacher for the recipe's compute (twin and distilled student: iterations x
   the measured step times), the "student alone" arm; it needs no teacher, so it runs beside steps 2-5, each
   training on its share of the cores;
7. validates PSNR/SSIM of the noisy input, the teacher, the twin and both students on the held-out crops, and
   writes a comparison image (noisy | teacher | student | clean);
8. measures the energy (SynOps, MACs, firing rates, mJ) of student and teacher.

Both steps train the shipped files changed in size only (iterations with their schedules scaled, 32x32 crops, batch
8, the demo's data, no data workers, logging and validation frequency), with the demo's NAFNet as step 1's teacher.
The teacher stands for the one a user has: its training is not charged to the recipe.

    spikerir-demo [--workdir demo_work] [--teacher-iters 150] [--twin-iters 300] [--student-iters 100] [--verbose]

The console shows one line per stage (with a progress bar) and the results; everything else (basicsr's options
dumps and network printouts, the full energy report) goes to the log files under --workdir (--verbose: also to the
console). The options files it writes there are plain BasicSR YAML and can be rerun with
`spikerir-train -opt <file>` from that folder.
"""
import argparse
import contextlib
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time

import numpy as np
import yaml

from spikerir_plugin.utils import console

SIGMA = 25
TRAIN_PHOTOS = ('astronaut', 'chelsea', 'rocket', 'immunohistochemistry')
VAL_PHOTOS = ('coffee', 'camera')
# Training crop side: 32 keeps the demo near 3 minutes on two cores (small steps are dominated by per-layer
# overheads: a 32x32 step costs more than (32/48)^2 of a 48x48 one). benchmarks/kd_ablation.py trains on 48x48.
TRAIN_CROP = 32
BATCH = 8
TEACHER_NET = {'type': 'NAFNet', 'img_channel': 3, 'width': 16, 'middle_blk_num': 1, 'enc_blk_nums': [1, 1, 1],
               'dec_blk_nums': [1, 1, 1]}
SHIPPED_TWIN = 'train_SpikerIR_twin_GaussianDenoise_sigma25.yml'  # step 1 of the recipe
SHIPPED_STUDENT = 'train_SpikerIR_GaussianDenoise_sigma25.yml'  # step 2
VAL_NAME = 'photos-val'


def _photo(name):
    import skimage.data
    img = skimage.data.stereo_motorcycle()[0] if name == 'motorcycle' else getattr(skimage.data, name)()
    return np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3]


def write_demo_images(folder, photos, size, per_side):
    """Crops on a regular grid of each photo, saved as PNG (BGR for OpenCV)."""
    from spikerir_plugin.utils.atomic import atomic_imwrite
    os.makedirs(folder, exist_ok=True)
    for name in photos:
        img = _photo(name)
        h, w = img.shape[:2]
        for i, y in enumerate(np.linspace(0, h - size, per_side).astype(int)):
            for j, x in enumerate(np.linspace(0, w - size, per_side).astype(int)):
                atomic_imwrite(os.path.join(folder, f'{name}_{i}{j}.png'), img[y:y + size, x:x + size, ::-1])
    return folder


def base_options(name, iters, train_lmdb, val_dir, batch, gt_size):
    return {
        'name': name, 'scale': 1, 'num_gpu': 'auto', 'manual_seed': 10,
        'datasets': {
            'train': {'name': 'photos-train', 'type': 'GaussianDenoiseDataset', 'dataroot_gt': train_lmdb,
                      'io_backend': {'type': 'lmdb'}, 'sigma': SIGMA, 'gt_size': gt_size, 'use_hflip': True,
                      'use_rot': True, 'num_worker_per_gpu': 0, 'batch_size_per_gpu': batch,
                      'dataset_enlarge_ratio': 1, 'prefetch_mode': None},
            'val': {'name': 'photos-val', 'type': 'GaussianDenoiseDataset', 'dataroot_gt': val_dir,
                    'io_backend': {'type': 'disk'}, 'sigma': SIGMA, 'noise_seed': 0},
        },
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'val': {'val_freq': iters, 'save_img': False, 'metrics': {
            'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False},
            'ssim': {'type': 'calculate_ssim', 'crop_border': 0, 'test_y_channel': False}}},
        'logger': {'print_freq': max(iters // 5, 1), 'save_checkpoint_freq': iters, 'use_tb_logger': False},
    }


def teacher_options(iters, train_lmdb, val_dir, gt_size=TRAIN_CROP):
    opt = base_options('demo_teacher_NAFNet', iters, train_lmdb, val_dir, batch=8, gt_size=gt_size)
    opt.update(model_type='SRModel', network_g=TEACHER_NET)
    opt['train'] = {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 2e-3, 'betas': [0.9, 0.99]},
                    'scheduler': {'type': 'CosineAnnealingRestartLR', 'periods': [iters], 'restart_weights': [1],
                                  'eta_min': 1e-6},
                    'total_iter': iters, 'warmup_iter': -1, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}}
    return opt


def demo_run(opt, name, iters):
    """The demo's run keys: its name, one validation and one checkpoint at the end, no tensorboard, and a progress
    line every 1/25 of the run (the stage bars advance on those lines)."""
    opt['name'] = name
    opt['val'] = dict(opt.get('val') or {}, val_freq=iters, save_img=False)
    opt['logger'] = dict(opt.get('logger') or {}, print_freq=max(1, iters // 25), save_checkpoint_freq=iters,
                         use_tb_logger=False)
    return opt


def recipe_options(twin_iters, student_iters, train_lmdb, val_dir, teacher_ckpt, checkpoint):
    """(step 1, step 2): the shipped files sized for the demo; step 1 learns from the demo's NAFNet teacher
    instead of the shipped Restormer, step 2 from that twin's checkpoint (``checkpoint(options)``)."""
    from spikerir_plugin import recipes
    size = dict(train_dir=train_lmdb, val_dir=val_dir, val_name=VAL_NAME, gt_size=TRAIN_CROP, batch=BATCH,
                train_backend='lmdb')
    twin = recipes.resized(recipes.load_shipped_options(SHIPPED_TWIN), twin_iters, **size)
    twin['network_t'] = dict(TEACHER_NET)
    twin['path']['pretrain_network_t'] = teacher_ckpt
    student = recipes.resized(recipes.load_shipped_options(SHIPPED_STUDENT), student_iters, **size)
    twin = demo_run(twin, 'demo_twin_SpikerIR', twin_iters)
    student['path']['pretrain_network_t'] = checkpoint(twin)
    return twin, demo_run(student, 'demo_student_SpikerIR', student_iters)


def alone_options(student_opt, iters):
    """The student alone (student_alone_options: no teacher, no distillation terms) for ``iters`` iterations."""
    from spikerir_plugin.utils.options import student_alone_options
    from spikerir_plugin.recipes import rescale_iterations
    alone = rescale_iterations(student_alone_options(student_opt), iters)
    return demo_run(alone, student_opt['name'] + '_alone', iters)


def measure_compute(log, options, twin_iters, student_iters, steps, threads, folder):
    """Stage 2: seconds per training step of the twin, the distilled student and the student alone (a few steps
    each, round robin in this process, on the cores one training gets), and the student alone's iterations for the
    recipe's compute (twin and distilled student). Returns the record written to ``folder``/compute.json."""
    import tempfile
    import torch
    from spikerir_plugin import recipes
    from spikerir_plugin.utils.atomic import atomic_write_text
    started = time.time()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        # the teachers are not trained yet: untrained ones cost the same per step
        with log.capture(), tempfile.TemporaryDirectory(prefix='spikerir_demo_teachers_') as untrained:
            costs = recipes.step_costs(recipes.with_untrained_teachers(options, untrained), steps, 'cpu')
    finally:
        torch.set_num_threads(before)
    recipe = costs['twin'] * twin_iters + costs['student'] * student_iters
    alone_iters = recipes.equal_compute_iterations(recipe, costs['alone'])
    record = {'step_s': costs, 'timed_steps': steps, 'threads': threads,
              'iters': {'twin': twin_iters, 'student': student_iters, 'alone': alone_iters},
              'compute_s': {'twin': costs['twin'] * twin_iters, 'student': recipe,
                            'alone': costs['alone'] * alone_iters}}
    os.makedirs(folder, exist_ok=True)
    atomic_write_text(os.path.join(folder, 'compute.json'), json.dumps(record, indent=1))
    log.write(f'step times (s, {steps} steps each, round robin): {json.dumps(costs)}; the student alone: '
              f'{alone_iters} iterations for the recipe\'s {recipe:.1f} s\n')
    stage_done(2, 'step times', started, f'twin {costs["twin"]:.2f} s, student {costs["student"]:.2f} s, alone '
                                         f'{costs["alone"]:.2f} s a step: the student alone trains {alone_iters} it')
    return record


def write_yaml(path, opt):
    from spikerir_plugin.utils.atomic import atomic_write_text
    atomic_write_text(path, yaml.safe_dump(opt, sort_keys=False))
    return path


# ------------------------------------------------------------------------------------------ console: one line per stage
STAGES = 8
_ITER = re.compile(r'\biter:\s*([\d,]+)')


def stage_bar(number, title, total, unit):
    """A tqdm line `[n/8] title |bar| done/total unit elapsed` on stderr."""
    return console.progress(total=total, desc=f'[{number}/{STAGES}] {title:<18s} ', dynamic_ncols=True,
                            bar_format='{desc}|{bar:24}| {n_fmt}/{total_fmt} ' + unit + ' {elapsed}',
                            mininterval=0.5)


def stage_done(number, title, started, info):
    """The line of a short stage without a count: `[n/8] title info (s)`."""
    console.status(f'[{number}/{STAGES}] {title:<18s} {info} ({time.time() - started:.0f} s)')


class DemoLog:
    """The demo's own log file (workdir/logs/demo.log): children's console output, data and energy details."""

    def __init__(self, workdir, verbose):
        os.makedirs(os.path.join(workdir, 'logs'), exist_ok=True)
        self.path = os.path.join(workdir, 'logs', 'demo.log')
        self.file = open(self.path, 'a', encoding='utf-8')
        self.verbose, self.console = verbose, sys.stdout  # the real console, also while capture() redirects

    def write(self, text):
        self.file.write(text)
        self.file.flush()
        if self.verbose:
            self.console.write(text)
            self.console.flush()

    @contextlib.contextmanager
    def capture(self):
        """Send what a library call prints (stdout and stderr) to the log instead of the console."""
        with contextlib.redirect_stdout(self), contextlib.redirect_stderr(self):
            yield

    def flush(self):
        self.file.flush()


def _pump(stream, lines):
    for line in stream:
        lines.put(line)
    lines.put(None)


def _children_cpu():
    """CPU seconds of the finished children waited for so far (a child's share: the difference around its wait)."""
    import resource
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def threads_per_run(parallel_runs):
    """Threads for each of `parallel_runs` concurrent trainings: the cores shared out (OMP_NUM_THREADS wins).
    Small networks gain little from a second thread, and busy cores make OpenMP's spinning threads very slow."""
    if os.environ.get('OMP_NUM_THREADS'):
        return int(os.environ['OMP_NUM_THREADS'])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)
    return max(1, cores // parallel_runs)


class Training:
    """spikerir-train in a child process, started at once; follow() shows its progress as one stage line (its
    iteration lines drive the bar) and sends its output to the demo log."""

    def __init__(self, options_file, workdir, log, iters, threads):
        self.options_file, self.log, self.iters = options_file, log, iters
        cmd = [sys.executable, '-m', 'spikerir_plugin.train', '-opt', options_file] + \
            (['--verbose'] if log.verbose else [])
        self.header = f'\n$ (cd {workdir}; OMP_NUM_THREADS={threads} {" ".join(cmd)})\n'
        env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS=str(threads))
        self.started = time.time()
        self.proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1)
        self.lines = queue.Queue()
        threading.Thread(target=_pump, args=(self.proc.stdout, self.lines), daemon=True).start()

    def follow(self, number, title):
        self.log.write(self.header)
        bar = stage_bar(number, title, self.iters, 'iters')
        tail = []
        while True:
            try:
                line = self.lines.get(timeout=1.0)
            except queue.Empty:  # nothing printed for a second (start-up, validation): keep the clock moving
                bar.refresh()
                continue
            if line is None:
                break
            self.log.write(line)
            tail = (tail + [line])[-25:]
            found = _ITER.search(line)
            if found:
                bar.update(int(found.group(1).replace(',', '')) - bar.n)
        before = _children_cpu()
        self.proc.wait()
        self.log.write(f'-- {title}: {time.time() - self.started:.0f} s since its start, '
                       f'{_children_cpu() - before:.0f} s CPU\n')
        if self.proc.returncode != 0:
            bar.close()
            if tail:  # the failed run's last lines, as it printed them
                console.warn(''.join(tail).rstrip('\n'))
            raise SystemExit(f'spikerir-demo: training {self.options_file} failed (exit {self.proc.returncode}); '
                             f'full output: {self.log.path}')
        bar.update(self.iters - bar.n)
        bar.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()


# ------------------------------------------------------------------------------------------------------ evaluation
ROWS = {'teacher (NAFNet)': 'teacher', 'analog twin (no spikes)': 'twin', 'student (SpikerIR)': 'student',
        'student alone (SpikerIR)': 'alone'}  # the table's rows -> the runs


def load_demo_networks(runs, checkpoint):
    """The trained networks, as their options build them, with their raw weights (`params`, the weights the
    benchmarks report), by table row."""
    from spikerir_plugin.utils.options import network_from_options
    return {row: network_from_options(runs[run]['network_g'], 'network_g', checkpoint(runs[run]), 'params')
            for row, run in ROWS.items()}


def evaluate(val_dir, nets, number=7):
    """PSNR/SSIM (RGB, basicsr's metrics on uint8 images) of the noisy input and each network; also returns the
    uint8 images (per crop: noisy, each network, clean) for the comparison image."""
    import torch
    from basicsr.data import build_dataset
    from basicsr.metrics import calculate_psnr, calculate_ssim
    from basicsr.utils import tensor2img
    from spikerir_plugin.inference import inference_network

    runners = {name: inference_network(net) for name, net in nets.items()}
    dataset = build_dataset({'name': 'val', 'type': 'GaussianDenoiseDataset', 'dataroot_gt': val_dir,
                             'io_backend': {'type': 'disk'}, 'sigma': SIGMA, 'noise_seed': 0, 'phase': 'val',
                             'scale': 1})
    scores = {name: [] for name in ['noisy input', *nets]}
    images = []
    bar = stage_bar(number, 'evaluate', len(dataset), 'crops')
    with torch.no_grad():
        for i in range(len(dataset)):
            sample = dataset[i]
            gt = tensor2img(sample['gt'])
            outputs = {'noisy input': tensor2img(sample['lq'])}
            for name, runner in runners.items():
                outputs[name] = tensor2img(runner(sample['lq'][None])[0])
            for name, img in outputs.items():
                scores[name].append((calculate_psnr(img, gt, 0), calculate_ssim(img, gt, 0)))
            images.append({**outputs, 'clean': gt})
            bar.update()
    bar.close()
    return {name: tuple(np.mean(vals, axis=0)) for name, vals in scores.items()}, len(dataset), images


def print_table(scores, nets, count, iters, compute):
    """The results: PSNR/SSIM, parameters, iterations and training compute (s) of each run, and the gain of the
    recipe over the student alone at equal compute."""
    params = {name: sum(p.numel() for p in net.parameters()) for name, net in nets.items()}
    console.info(f'\n== {count} held-out crops ({", ".join(VAL_PHOTOS)}), Gaussian noise sigma {SIGMA}')
    console.info(f'{"":26s} {"PSNR dB":>8s} {"SSIM":>7s} {"params":>10s} {"iters":>6s} {"compute s":>10s}')
    for name, (psnr, ssim) in scores.items():
        run = ROWS.get(name)
        count_str = f'{params[name]:,}' if name in params else ''
        iters_str = str(iters[run]) if run else ''
        compute_str = f'{compute[run]:.1f}' if run in compute else ('given' if run else '')
        console.info(f'{name:26s} {psnr:8.2f} {ssim:7.4f} {count_str:>10s} {iters_str:>6s} {compute_str:>10s}')
    gain = scores['student (SpikerIR)'][0] - scores['student alone (SpikerIR)'][0]
    console.info('student: the shipped recipe, sized (teacher -> analog twin -> student); student alone: the same '
                 "student's options without a teacher,\ntrained for the recipe's compute (s: iterations x the step "
                 "time measured round robin at the start; the twin's included, the teacher given)")
    console.info(f"distillation {gain:+.2f} dB over the student alone at equal compute (twin's training included)")


def comparison_image(images, path, names=('noisy input', 'teacher (NAFNet)', 'student (SpikerIR)', 'clean'),
                     rows=2, zoom=2):
    """Crops side by side (noisy | teacher | student | clean), labelled columns, enlarged `zoom` times (nearest) so
    the noise shows. One row per validation photo (the crops come photo by photo): its most textured crop."""
    import cv2
    from spikerir_plugin.utils.atomic import atomic_imwrite
    per_photo = max(1, len(images) // rows)
    picks = [max(images[i:i + per_photo], key=lambda crop: crop['clean'].std())
             for i in range(0, per_photo * rows, per_photo)]
    h, w = (side * zoom for side in picks[0]['clean'].shape[:2])
    gap = 4
    header = np.full((24, len(names) * (w + gap) - gap, 3), 255, np.uint8)
    for j, name in enumerate(names):
        cv2.putText(header, name.split(' (')[0], (j * (w + gap) + 4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (0, 0, 0), 1, cv2.LINE_AA)
    strips = [header]
    for crop in picks:
        row = []
        for name in names:
            row += [cv2.resize(crop[name], (w, h), interpolation=cv2.INTER_NEAREST), np.full((h, gap, 3), 255,
                                                                                            np.uint8)]
        strips += [np.concatenate(row[:-1], axis=1), np.full((gap, header.shape[1], 3), 255, np.uint8)]
    atomic_imwrite(path, np.concatenate(strips[:-1], axis=0))
    return path


def energy_summary(report):
    student, teacher = report['student'], report['teacher']
    side = 'x'.join(str(v) for v in student['input_shape'][-2:])
    console.info(f'\n== energy per {side} image (E = {student["convention"]["e_mac_pJ"]} pJ x MAC + '
                 f'{student["convention"]["e_ac_pJ"]} pJ x SynOp)')
    for label, r in (('teacher (NAFNet)', teacher), ('student (SpikerIR)', student)):
        t = r['totals']
        rate = f', mean firing rate {t["mean_firing_rate"]:.3f}' if t['mean_firing_rate'] is not None else ''
        console.info(f'{label:26s} {t["energy_mJ"]:8.3f} mJ  ({t["macs"] / 1e6:,.1f} M MACs, '
                     f'{t["synops"] / 1e6:,.1f} M SynOps{rate})')
    console.info(f'energy ratio teacher/student: {report["ratio_teacher_over_student"]:.2f}')


def energy_stage(log, energy_dir, student_yml, student_ckpt, twin_yml, size):
    """Stage 8: spikerir-energy on the distilled student against the twin; returns its report."""
    from spikerir_plugin.tools import energy_report
    started = time.time()
    with log.capture():
        energy_report.main(['-opt', student_yml, '--ckpt', student_ckpt, '--teacher-from', twin_yml,
                            '--size', str(size), '--sigma', str(SIGMA), '--out', energy_dir])
    with open(os.path.join(energy_dir, 'energy.json')) as f:
        report = json.load(f)
    stage_done(8, 'energy', started, f"student {report['student']['totals']['energy_mJ']:.3f} mJ, teacher "
                                     f"{report['teacher']['totals']['energy_mJ']:.3f} mJ per image")
    return report


def build_parser():
    parser = argparse.ArgumentParser(prog='spikerir-demo', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--workdir', default='demo_work')
    parser.add_argument('--teacher-iters', type=int, default=150)
    parser.add_argument('--twin-iters', type=int, default=300, help="step 1: iterations of the student's analog twin "
                        "(3x the student's, the shipped files' ratio; a step, the teacher's forward included, costs "
                        "about 0.4x a spiking student's)")
    parser.add_argument('--student-iters', type=int, default=100, help='step 2: iterations of the distilled student')
    parser.add_argument('--step-cost', type=int, default=5,
                        help='timed training steps per run for the comparison at equal compute')
    parser.add_argument('--energy-size', type=int, default=128, help='input side for the energy report')
    parser.add_argument('--verbose', action='store_true', help='also print the logs (basicsr\'s console output)')
    return parser


def prepare_demo_data(workdir, log):
    """Stage 1: the training crops (as an LMDB) and the validation crops under workdir/datasets."""
    started = time.time()
    with log.capture():
        import spikerir_plugin  # noqa: F401
        from spikerir_plugin.tools.prepare_data import prepare_folder_lmdb
        data = os.path.join(workdir, 'datasets')
        train_png = write_demo_images(os.path.join(data, 'photos_train_png'), TRAIN_PHOTOS, 96, 4)
        val_dir = write_demo_images(os.path.join(data, 'photos_val'), VAL_PHOTOS, 96, 2)
        train_lmdb = os.path.join(data, 'photos_train.lmdb')
        if not os.path.isdir(train_lmdb):
            prepare_folder_lmdb(train_png, train_lmdb)
    stage_done(1, 'data', started, f'{len(os.listdir(train_png))} training crops (LMDB), {len(os.listdir(val_dir))} '
                                   f'validation crops')
    return train_lmdb, val_dir


def train_demo_runs(args, workdir, log, train_lmdb, val_dir, checkpoint):
    """Stages 2-6: the teacher, the twin and the distilled student one after the other on one core, the student
    alone for the recipe's measured compute on the other. Returns (options of each run, their option files,
    iterations of each run, the measured compute)."""
    runs = {'teacher': demo_run(teacher_options(args.teacher_iters, train_lmdb, val_dir), 'demo_teacher_NAFNet',
                                args.teacher_iters)}
    with log.capture():
        runs['twin'], runs['student'] = recipe_options(args.twin_iters, args.student_iters, train_lmdb, val_dir,
                                                       checkpoint(runs['teacher']), checkpoint)
    threads = threads_per_run(2)
    files = {run: os.path.join(workdir, f'train_demo_{name}.yml') for run, name in (
        ('teacher', 'teacher'), ('twin', 'twin'), ('student', 'student'), ('alone', 'student_alone'))}
    trainings = []
    try:
        trainings.append(Training(write_yaml(files['teacher'], runs['teacher']), workdir, log, args.teacher_iters,
                                  threads))
        # The step times are taken beside the teacher's training, so under the same load as the trainings they
        # price; the student alone needs no teacher and starts as soon as its iterations are known, on the other
        # core, beside the teacher, the twin and the distillation.
        timed = {'twin': runs['twin'], 'student': runs['student'],
                 'alone': alone_options(runs['student'], args.student_iters)}
        compute = measure_compute(log, timed, args.twin_iters, args.student_iters, args.step_cost, threads,
                                  os.path.join(workdir, 'results'))
        iters = dict(compute['iters'], teacher=args.teacher_iters)
        runs['alone'] = alone_options(runs['student'], iters['alone'])
        alone = Training(write_yaml(files['alone'], runs['alone']), workdir, log, iters['alone'], threads)
        trainings.append(alone)
        trainings[0].follow(3, 'teacher NAFNet')
        Training(write_yaml(files['twin'], runs['twin']), workdir, log, args.twin_iters, threads).follow(
            4, 'analog twin')
        Training(write_yaml(files['student'], runs['student']), workdir, log, args.student_iters, threads).follow(
            5, 'student distilled')
        alone.follow(6, 'student alone')
    finally:
        for training in trainings:
            training.stop()
    return runs, files, iters, compute


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag in ('teacher_iters', 'twin_iters', 'student_iters', 'step_cost'):
        if getattr(args, flag) < 1:
            parser.error(f'--{flag.replace("_", "-")} must be at least 1, got {getattr(args, flag)}')

    start = time.time()
    workdir = os.path.abspath(args.workdir)
    log = DemoLog(workdir, args.verbose)
    console.info(f'spikerir-demo: NAFNet teacher -> SpikerIR student, Gaussian denoising (sigma {SIGMA}) on photos '
                 f'bundled with scikit-image; logs in {os.path.join(workdir, "logs")} and '
                 f'{os.path.join(workdir, "experiments")}')
    train_lmdb, val_dir = prepare_demo_data(workdir, log)
    experiments = os.path.join(workdir, 'experiments')

    def checkpoint(opt):
        return os.path.join(experiments, opt['name'], 'models', 'net_g_latest.pth')

    runs, files, iters, compute = train_demo_runs(args, workdir, log, train_lmdb, val_dir, checkpoint)

    with log.capture():
        nets = load_demo_networks(runs, checkpoint)
    scores, count, images = evaluate(val_dir, nets)
    results = os.path.join(workdir, 'results')
    comparison = comparison_image(images, os.path.join(results, 'comparison.png'))
    energy_dir = os.path.join(results, 'energy')
    report = energy_stage(log, energy_dir, files['student'], checkpoint(runs['student']), files['twin'],
                          args.energy_size)

    print_table(scores, nets, count, iters, compute['compute_s'])
    energy_summary(report)
    console.info(f'\ncomparison image (noisy | teacher | student | clean): {comparison}')
    console.info(f'energy plot: {os.path.join(energy_dir, "energy.png")} (full report: energy.txt, energy.json)')
    console.info(f'logs: {log.path}; options dumps and network printouts: {experiments}/<name>/train_*.log')
    import resource
    own = resource.getrusage(resource.RUSAGE_SELF)
    cpu = own.ru_utime + own.ru_stime + _children_cpu()
    console.info(f'demo finished in {time.time() - start:.0f} s ({cpu:.0f} s CPU in all); everything is under '
                 f'{workdir}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
