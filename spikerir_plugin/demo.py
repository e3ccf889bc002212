"""The one-command demo (CPU, about 3 minutes on 2 idle cores): ANN teacher -> SpikerIR student on real photos.

1. builds a small Gaussian-denoising set (sigma 25) from the photos bundled with scikit-image: clean training
   crops into an LMDB, held-out validation crops into a folder;
2. trains a small NAFNet teacher with BasicSR's own SRModel and train pipeline;
3. distils the student's analog twin from it (SpikerIR with rate neurons and one time step: an ANN with the
   student's layers) with SpikerIRDistillModel;
4. distils the spiking SpikerIR student from the twin: it starts from the twin's weights and matches its outputs
   and features layer for layer (the recipe that won benchmarks/kd_ablation.py);
5. trains the same student for the same iterations without a teacher (the "student alone" arm; it needs no
   teacher, so it runs beside steps 2-4, each training on its share of the cores);
6. validates PSNR/SSIM of the noisy input, the teacher, the twin and both students on the held-out crops, and
   writes a comparison image (noisy | teacher | student | clean);
7. measures the energy (SynOps, MACs, firing rates, mJ) of student and teacher.

    spikerir-demo [--workdir demo_work] [--teacher-iters 150] [--twin-iters 300] [--student-iters 120] [--verbose]

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
# Training crop side: 32 keeps the demo near 3 minutes on two cores (a spiking student's step costs about 0.6x, the
# twin's 0.75x of one on 48x48 crops: small steps are dominated by per-layer overheads). The ablation harness,
# benchmarks/kd_ablation.py, trains on 48x48 crops.
TRAIN_CROP = 32
TEACHER_NET = {'type': 'NAFNet', 'img_channel': 3, 'width': 16, 'middle_blk_num': 1, 'enc_blk_nums': [1, 1, 1],
               'dec_blk_nums': [1, 1, 1]}
STUDENT_NET = {'type': 'SpikerIR', 'preset': 'tiny', 'T': 4}
# The student's analog twin: the same layers and parameter names with rate neurons (no spikes) and one time step, an
# ANN that trains about 4x faster per iteration and converges in fewer. The recipe: ANN teacher -> twin -> student.
TWIN_NET = {'type': 'SpikerIR', 'preset': 'tiny', 'T': 1, 'reduction_t': 1, 'neuron': 'rate'}
FROM_TWIN = {'init_from_teacher': True, 'hint_adapter': 'identity'}  # the student's keys when the twin teaches


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


def distill_options(name, iters, train_lmdb, val_dir, student_net, teacher_net, teacher_ckpt, gt_size):
    """A SpikerIRDistillModel run of ``student_net`` from a frozen ``teacher_net``: L1 + 0.1 FFT to the ground truth,
    feature hints (MSE) and output KD (L1), both weighted by a cosine schedule from 1 to 0.1."""
    opt = base_options(name, iters, train_lmdb, val_dir, batch=8, gt_size=gt_size)
    opt.update(model_type='SpikerIRDistillModel', network_g=dict(student_net), network_t=dict(teacher_net))
    opt['path'].update(pretrain_network_t=teacher_ckpt, param_key_t='params', strict_load_t=True)
    opt['train'] = {'ema_decay': 0, 'optim_g': {'type': 'AdamW', 'lr': 2e-3, 'weight_decay': 0.0,
                                                'betas': [0.9, 0.99]},
                    'scheduler': {'type': 'CosineAnnealingLR', 'T_max': iters, 'eta_min': 1e-6},
                    'total_iter': iters, 'warmup_iter': -1,
                    'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
                    'fft_opt': {'type': 'FFTLoss', 'loss_weight': 0.1},
                    'hint_opt': {'type': 'HintLoss', 'criterion': 'mse', 'loss_weight': 1.0},
                    'kd_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
                    'kd_schedule': {'type': 'cosine', 'start': 1.0, 'end': 0.1, 'start_iter': 0, 'end_iter': iters}}
    return opt


def twin_options(iters, train_lmdb, val_dir, teacher_ckpt, gt_size=TRAIN_CROP):
    """Step 1 of the recipe: the student's analog twin (same layers, rate neurons, T=1) distilled from the ANN
    teacher with output KD at a constant weight (no hints: the twin is 1/3 the teacher's width)."""
    opt = distill_options('demo_twin_SpikerIR', iters, train_lmdb, val_dir, TWIN_NET, TEACHER_NET, teacher_ckpt,
                          gt_size)
    opt['train'].pop('hint_opt')
    opt['train']['kd_schedule'] = {'type': 'constant', 'start': 1.0}
    return opt


def student_options(iters, train_lmdb, val_dir, twin_ckpt, gt_size=TRAIN_CROP):
    """Step 2: the spiking student starts from its twin's weights and is distilled from it, layer for layer (the
    hints need no adapter: the twin has the student's channels at every layer)."""
    opt = distill_options('demo_student_SpikerIR', iters, train_lmdb, val_dir, STUDENT_NET, TWIN_NET, twin_ckpt,
                          gt_size)
    opt['train'].update(FROM_TWIN)
    return opt


def write_yaml(path, opt):
    from spikerir_plugin.utils.atomic import atomic_write_text
    atomic_write_text(path, yaml.safe_dump(opt, sort_keys=False))
    return path


# ------------------------------------------------------------------------------------------ console: one line per stage
STAGES = 7
_ITER = re.compile(r'\biter:\s*([\d,]+)')


def stage_bar(number, title, total, unit):
    """A tqdm line `[n/6] title |bar| done/total unit elapsed` on stderr."""
    return console.progress(total=total, desc=f'[{number}/{STAGES}] {title:<18s} ', dynamic_ncols=True,
                            bar_format='{desc}|{bar:24}| {n_fmt}/{total_fmt} ' + unit + ' {elapsed}',
                            mininterval=0.5)


def stage_done(number, title, started, info):
    """The line of a short stage without a count: `[n/6] title info (s)`."""
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


def with_progress_lines(opt, iters):
    """basicsr logs a progress line every print_freq iterations; the demo's bars advance on those lines."""
    opt['logger']['print_freq'] = max(1, iters // 25)
    return opt


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
def load_demo_networks(teacher_ckpt, twin_ckpt, student_ckpt, alone_ckpt):
    from spikerir_plugin.utils.options import network_from_options
    return {'teacher (NAFNet)': network_from_options(TEACHER_NET, 'network_t', teacher_ckpt, 'params', which='t'),
            'analog twin (no spikes)': network_from_options(TWIN_NET, 'network_t', twin_ckpt, 'params', which='t'),
            'student (SpikerIR)': network_from_options(STUDENT_NET, 'network_g', student_ckpt, 'params'),
            'student alone (SpikerIR)': network_from_options(STUDENT_NET, 'network_g', alone_ckpt, 'params')}


def evaluate(val_dir, nets, number=6):
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


def print_table(scores, nets, count):
    params = {name: sum(p.numel() for p in net.parameters()) for name, net in nets.items()}
    console.info(f'\n== {count} held-out crops ({", ".join(VAL_PHOTOS)}), Gaussian noise sigma {SIGMA}')
    console.info(f'{"":26s} {"PSNR dB":>8s} {"SSIM":>7s} {"params":>10s}')
    for name, (psnr, ssim) in scores.items():
        count_str = f'{params[name]:,}' if name in params else ''
        console.info(f'{name:26s} {psnr:8.2f} {ssim:7.4f} {count_str:>10s}')
    gain = scores['student (SpikerIR)'][0] - scores['student alone (SpikerIR)'][0]
    console.info(f'student: distilled (teacher -> analog twin -> student); student alone: the same student, data '
                 f'and iterations without a teacher (distillation {gain:+.2f} dB)')


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
    """Stage 7: spikerir-energy on the distilled student against the twin; returns its report."""
    from spikerir_plugin.tools import energy_report
    started = time.time()
    with log.capture():
        energy_report.main(['-opt', student_yml, '--ckpt', student_ckpt, '--teacher-from', twin_yml,
                            '--size', str(size), '--sigma', str(SIGMA), '--out', energy_dir])
    with open(os.path.join(energy_dir, 'energy.json')) as f:
        report = json.load(f)
    stage_done(7, 'energy', started, f"student {report['student']['totals']['energy_mJ']:.3f} mJ, teacher "
                                     f"{report['teacher']['totals']['energy_mJ']:.3f} mJ per image")
    return report


def build_parser():
    parser = argparse.ArgumentParser(prog='spikerir-demo', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--workdir', default='demo_work')
    parser.add_argument('--teacher-iters', type=int, default=150)
    parser.add_argument('--twin-iters', type=int, default=300, help="iterations of the student's analog twin (a step, "
                        "the teacher's forward included, costs about half a spiking student's)")
    parser.add_argument('--student-iters', type=int, default=120)
    parser.add_argument('--energy-size', type=int, default=128, help='input side for the energy report')
    parser.add_argument('--verbose', action='store_true', help='also print the logs (basicsr\'s console output)')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)

    start = time.time()
    workdir = os.path.abspath(args.workdir)
    log = DemoLog(workdir, args.verbose)
    console.info(f'spikerir-demo: NAFNet teacher -> SpikerIR student, Gaussian denoising (sigma {SIGMA}) on photos '
                 f'bundled with scikit-image; logs in {os.path.join(workdir, "logs")} and '
                 f'{os.path.join(workdir, "experiments")}')

    started = time.time()
    with log.capture():
        import spikerir_plugin  # noqa: F401
        from spikerir_plugin.models.spikerir_distill_model import student_alone_options
        from spikerir_plugin.tools.prepare_data import prepare_folder_lmdb
        data = os.path.join(workdir, 'datasets')
        train_png = write_demo_images(os.path.join(data, 'photos_train_png'), TRAIN_PHOTOS, 96, 4)
        val_dir = write_demo_images(os.path.join(data, 'photos_val'), VAL_PHOTOS, 96, 2)
        train_lmdb = os.path.join(data, 'photos_train.lmdb')
        if not os.path.isdir(train_lmdb):
            prepare_folder_lmdb(train_png, train_lmdb)
    stage_done(1, 'data', started, f'{len(os.listdir(train_png))} training crops (LMDB), {len(os.listdir(val_dir))} '
                                   f'validation crops')

    # The student trained alone needs no teacher: it runs beside the teacher, the twin and the distillation, on its
    # own share of the cores, and its line follows theirs.
    experiments = os.path.join(workdir, 'experiments')

    def checkpoint(opt):
        return os.path.join(experiments, opt['name'], 'models', 'net_g_latest.pth')

    t_opt = with_progress_lines(teacher_options(args.teacher_iters, train_lmdb, val_dir), args.teacher_iters)
    w_opt = with_progress_lines(twin_options(args.twin_iters, train_lmdb, val_dir, checkpoint(t_opt)),
                                args.twin_iters)
    s_opt = with_progress_lines(student_options(args.student_iters, train_lmdb, val_dir, checkpoint(w_opt)),
                                args.student_iters)
    a_opt = student_alone_options(s_opt, name=s_opt['name'] + '_alone')
    student_yml = write_yaml(os.path.join(workdir, 'train_demo_student.yml'), s_opt)
    twin_yml = write_yaml(os.path.join(workdir, 'train_demo_twin.yml'), w_opt)
    threads = threads_per_run(2)
    alone = Training(write_yaml(os.path.join(workdir, 'train_demo_student_alone.yml'), a_opt), workdir, log,
                     args.student_iters, threads)
    try:
        Training(write_yaml(os.path.join(workdir, 'train_demo_teacher.yml'), t_opt), workdir, log, args.teacher_iters,
                 threads).follow(2, 'teacher NAFNet')
        Training(twin_yml, workdir, log, args.twin_iters, threads).follow(3, 'analog twin')
        Training(student_yml, workdir, log, args.student_iters, threads).follow(4, 'student distilled')
        alone.follow(5, 'student alone')
    finally:
        alone.stop()

    with log.capture():
        nets = load_demo_networks(checkpoint(t_opt), checkpoint(w_opt), checkpoint(s_opt), checkpoint(a_opt))
    scores, count, images = evaluate(val_dir, nets)
    results = os.path.join(workdir, 'results')
    comparison = comparison_image(images, os.path.join(results, 'comparison.png'))

    energy_dir = os.path.join(results, 'energy')
    report = energy_stage(log, energy_dir, student_yml, checkpoint(s_opt), twin_yml, args.energy_size)

    print_table(scores, nets, count)
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
