"""Kill-and-resume soak: a tiny SpikingSRModel run is killed with SIGKILL at random points, over and over, and
resumed with --auto_resume each time; at the end its weights must equal an uninterrupted run's, and every
checkpoint written on the way must still be there and loadable.

    python benchmarks/resume_soak.py [--cycles 50] [--seed 0] [--workdir /tmp/resume_soak] [--json out.json]

Setup: SpikerIR (preset tiny, T=2) on 8 clean 48x48 crops of scikit-image photos, Gaussian noise (sigma 25, drawn
by GaussianDenoiseDataset), random 32x32 crops and flips, batch 2 (4 iterations per epoch), AdamW, cosine LR, EMA,
a checkpoint (net_g_<iter>.pth + <iter>.state) every ``--save-freq`` iterations, one CPU thread.

Each run is a real basicsr ``train_pipeline`` in a child process forked from this one (the imports are done once
here, so a cycle costs training time, not interpreter start-up); the child is killed with SIGKILL, never asked to
stop. Kill points alternate between a random delay (from 0.3x the reference run's time to its first checkpoint up
to two checkpoints later) and the moment the 1st-4th checkpoint write of that run is seen in progress (its
temporary file exists). ``--write-delay`` widens each write in the child (a sleep in ``os.fsync``, which the atomic
writer calls between writing the temporary file and renaming it) so that kills land inside writes often enough to
count; the plugin's code is not changed.

After every kill: every ``net_g_<iter>.pth`` / ``<iter>.state`` seen so far must still exist and load through the
plugin's checkpoint reader, and no complete file may have changed unless the resumed run wrote that iteration
again (then it must hold the same weights as the reference). At the end the final weights and every saved
iteration are compared with the uninterrupted reference run (bitwise).

Output: one line per cycle, then a summary table; ``--json`` writes the figures. Exit status 1 on any mismatch or
lost file.
"""
import argparse
import glob
import hashlib
import json
import os
import random
import signal
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)
from spikerir_plugin.utils import console  # noqa: E402


def make_data(folder, size=48, count=8):
    """Clean RGB crops of scikit-image's bundled photos as PNG files."""
    import numpy as np
    import skimage.data
    from spikerir_plugin.utils.atomic import atomic_imwrite
    os.makedirs(folder, exist_ok=True)
    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    for i in range(count):
        img = photos[i % len(photos)]
        y = (img.shape[0] - size) * (i // len(photos) + 1) // 3
        x = (img.shape[1] - size) * (i // len(photos) + 1) // 4
        atomic_imwrite(os.path.join(folder, f'{i:03d}.png'), np.ascontiguousarray(img[y:y + size, x:x + size, ::-1]))
    return folder


def options(name, data, total_iter, save_freq):
    return {
        'name': name, 'model_type': 'SpikingSRModel', 'scale': 1, 'num_gpu': 0, 'manual_seed': 11,
        'datasets': {'train': {'name': 'soak', 'type': 'GaussianDenoiseDataset', 'dataroot_gt': data,
                               'io_backend': {'type': 'disk'}, 'sigma': 25, 'gt_size': 32, 'use_hflip': True,
                               'use_rot': True, 'num_worker_per_gpu': 0, 'batch_size_per_gpu': 2,
                               'dataset_enlarge_ratio': 1, 'prefetch_mode': None}},
        'network_g': {'type': 'SpikerIR', 'preset': 'tiny', 'T': 2, 'reduction_t': 2},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0.9, 'optim_g': {'type': 'AdamW', 'lr': 1e-3, 'weight_decay': 0.0},
                  'scheduler': {'type': 'CosineAnnealingLR', 'T_max': total_iter, 'eta_min': 1e-5},
                  'total_iter': total_iter, 'warmup_iter': -1,
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}},
        'logger': {'print_freq': 10 ** 6, 'save_checkpoint_freq': save_freq, 'use_tb_logger': False},
    }


def write_options(path, opt):
    import yaml
    from spikerir_plugin.utils.atomic import atomic_write_text
    atomic_write_text(path, yaml.safe_dump(opt, sort_keys=False))
    return path


def start_run(workdir, yml, log_path, resume, write_delay):
    """Fork a child that runs basicsr's train_pipeline on ``yml``; returns its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        import torch
        torch.set_num_threads(1)  # no OpenMP team in a forked child (as DataLoader workers do)
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.chdir(workdir)
        if write_delay > 0:
            real_fsync = os.fsync

            def slow_fsync(fd_):
                time.sleep(write_delay)
                real_fsync(fd_)
            os.fsync = slow_fsync
        sys.argv = ['train.py', '-opt', yml] + (['--auto_resume'] if resume else [])
        from basicsr.train import train_pipeline
        train_pipeline(workdir)
        code = 0
    except BaseException:
        import traceback
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def wait(pid, block=True):
    """The child's exit code (negative: killed by that signal), or None if it still runs (block=False)."""
    done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
    return os.waitstatus_to_exitcode(status) if done else None


def checkpoint_files(exp):
    return sorted(glob.glob(os.path.join(exp, 'models', 'net_g_*.pth')) +
                  glob.glob(os.path.join(exp, 'training_states', '*.state')))


def temp_files(exp):
    return [p for d in ('models', 'training_states') for p in glob.glob(os.path.join(exp, d, '.*.tmp'))]


def sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def weights(path):
    from spikerir_plugin.utils.checkpoint import read_checkpoint
    ckpt = read_checkpoint(path, 'soak', 'weights')
    return {f'{k}.{n}': v for k in ('params', 'params_ema') for n, v in ckpt[k].items()}


def same_weights(a, b):
    import torch
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def kill_at(pid, exp, deadline, write_number=None):
    """SIGKILL the child at ``deadline`` or, given write_number k, as soon as the k-th checkpoint write of this run
    is seen in progress (its temporary file exists). Returns the child's exit code (-9 when killed)."""
    writes = set()
    while time.time() < deadline:
        if write_number is not None:
            writes.update(temp_files(exp))
            if len(writes) >= write_number:
                break
        code = wait(pid, block=False)
        if code is not None:
            return code
        time.sleep(0.002 if write_number is not None else 0.01)
    os.kill(pid, signal.SIGKILL)
    return wait(pid)


def wait_for_new_archive_name(exp, last_end):
    """With no training state to resume from, basicsr's train_pipeline renames the experiment folder to
    ``<name>_archived_<timestamp>`` (one-second resolution) and fails if a run killed in the same second already
    took that name. A person restarting a killed run never does so within a second; the soak waits as long."""
    if not glob.glob(os.path.join(exp, 'training_states', '*.state')):
        time.sleep(max(0.0, last_end + 1.05 - time.time()))


def timed_reference(workdir, yml, exp):
    """Run the reference to the end; returns (seconds to its first checkpoint, seconds per checkpoint after)."""
    start = time.time()
    pid = start_run(workdir, yml, os.path.join(workdir, 'reference.log'), False, 0)
    first = None
    while (code := wait(pid, block=False)) is None:
        if first is None and checkpoint_files(exp):
            first = time.time() - start
        time.sleep(0.01)
    if code != 0:
        raise RuntimeError(f'the reference run failed (exit {code}); see {workdir}/reference.log')
    saves = len(glob.glob(os.path.join(exp, 'training_states', '*.state')))
    first = first or time.time() - start
    return first, (time.time() - start - first) / max(saves - 1, 1)


def inspect_after_kill(exp, killed, seen, reference, figures):
    """What a kill left in the experiment folder, counted into ``figures``: (a write was cut off, the newest
    checkpoint iteration, the checkpoint files, the files seen before and lost now, the unreadable ones).
    ``seen`` (path -> sha256 of every complete checkpoint seen so far) is updated."""
    from spikerir_plugin.utils.checkpoint import read_checkpoint
    in_write = temp_files(exp)
    figures['kills_during_writes'] += bool(killed and in_write)
    states = {int(os.path.basename(p)[:-6]) for p in glob.glob(os.path.join(exp, 'training_states', '*.state'))}
    nets = {int(os.path.basename(p)[6:-4]) for p in glob.glob(os.path.join(exp, 'models', 'net_g_*.pth'))
            if os.path.basename(p)[6:-4].isdigit()}
    newest = max(nets | states, default=None)
    figures['kills_between_weights_and_state'] += bool(killed and newest in nets - states)
    figures['kills_before_first_checkpoint'] += bool(killed and not (nets | states))
    files = checkpoint_files(exp)
    lost = [p for p in seen if p not in files]
    figures['lost_files'] += len(lost)
    unreadable = []
    for path in files:
        try:
            read_checkpoint(path, 'soak', 'checkpoint')
        except Exception as error:  # noqa: BLE001 - every failure is a finding
            unreadable.append(f'{os.path.basename(path)}: {getattr(error, "reason", error)}')
            continue
        digest = sha256(path)
        name = os.path.basename(path)
        if path in seen and seen[path] != digest and not (name.endswith('.pth') and name in reference and
                                                           same_weights(weights(path), reference[name])):
            figures['changed_files'] += 1
        seen[path] = digest
    figures['unreadable_files'] += len(unreadable)
    return in_write, newest, files, lost, unreadable


def run_soak(workdir, cycles=50, total_iter=200, save_freq=2, seed=0, write_delay=0.05, log=console.info):
    import torch
    import spikerir_plugin  # noqa: F401  (shims and registration before basicsr.train, once, in this process)
    import basicsr.train  # noqa: F401
    torch.set_num_threads(1)
    rng = random.Random(seed)
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    data = make_data(os.path.join(workdir, 'data'))
    ref_yml = write_options(os.path.join(workdir, 'reference.yml'), options('reference', data, total_iter, save_freq))
    soak_yml = write_options(os.path.join(workdir, 'soak.yml'), options('soak', data, total_iter, save_freq))
    ref_exp, exp = os.path.join(workdir, 'experiments', 'reference'), os.path.join(workdir, 'experiments', 'soak')

    start = time.time()
    to_first, per_save = timed_reference(workdir, ref_yml, ref_exp)
    reference = {os.path.basename(p): weights(p) for p in glob.glob(os.path.join(ref_exp, 'models', '*.pth'))}

    figures = {'cycles': 0, 'kills': 0, 'kills_during_writes': 0, 'kills_between_weights_and_state': 0,
               'kills_before_first_checkpoint': 0, 'runs_finished_before_kill': 0, 'lost_files': 0,
               'unreadable_files': 0, 'changed_files': 0, 'mismatched_iterations': 0,
               'reference_s_to_first_checkpoint': round(to_first, 2), 'reference_s_per_checkpoint': round(per_save, 2),
               'write_delay_s': write_delay, 'total_iter': total_iter,
               'save_freq': save_freq, 'seed': seed}
    seen = {}  # path -> sha256 of every complete checkpoint file seen so far
    soak_log = os.path.join(workdir, 'soak.log')
    finished = False
    last_end = 0.0
    while figures['cycles'] < cycles and not finished:
        figures['cycles'] += 1
        targeted = figures['cycles'] % 2 == 0
        before = set(checkpoint_files(exp))
        wait_for_new_archive_name(exp, last_end)
        pid = start_run(workdir, soak_yml, soak_log, resume=True, write_delay=write_delay)
        if targeted:  # the 1st to 4th write of this run (a net_g_<iter>.pth or an <iter>.state)
            code = kill_at(pid, exp, time.time() + to_first + 6 * per_save, rng.randint(1, 4))
        else:  # anywhere from model building to about two checkpoints in
            code = kill_at(pid, exp, time.time() + rng.uniform(0.3 * to_first, to_first + 2 * per_save))
        last_end = time.time()
        killed = code == -signal.SIGKILL
        if code == 0:
            finished = True
            figures['runs_finished_before_kill'] += 1
        elif not killed:
            raise RuntimeError(f'a resumed run failed (exit {code}); see {soak_log}')
        else:
            figures['kills'] += 1
        in_write, newest, files, lost, unreadable = inspect_after_kill(exp, killed, seen, reference, figures)
        new = len(set(files) - before)
        log(f'cycle {figures["cycles"]:3d}  {"write-targeted" if targeted else "random-time   "}  '
            f'{"killed" if killed else "finished"}  newest checkpoint {newest}  +{new} files  '
            f'{"kill inside a write" if killed and in_write else ""}'
            f'{"  LOST " + str(lost) if lost else ""}{"  UNREADABLE " + str(unreadable) if unreadable else ""}')
    if not finished:
        wait_for_new_archive_name(exp, last_end)
        code = wait(start_run(workdir, soak_yml, soak_log, resume=True, write_delay=0))
        if code != 0:
            raise RuntimeError(f'the final resumed run failed (exit {code}); see {soak_log}')
    for name, ref in reference.items():
        path = os.path.join(exp, 'models', name)
        if not os.path.exists(path) or not same_weights(weights(path), ref):
            figures['mismatched_iterations'] += 1
            log(f'MISMATCH {name}')
    figures['compared_checkpoints'] = len(reference)
    figures['final_weights_equal'] = same_weights(weights(os.path.join(exp, 'models', 'net_g_latest.pth')),
                                                  reference['net_g_latest.pth'])
    figures['seconds'] = round(time.time() - start, 1)
    return figures


SUMMARY = [('cycles', 'train / kill / resume cycles'), ('kills', 'SIGKILLs'),
           ('kills_during_writes', 'kills while a checkpoint was being written'),
           ('kills_between_weights_and_state', 'kills after net_g_<iter>.pth, before <iter>.state'),
           ('kills_before_first_checkpoint', 'kills before any checkpoint existed'),
           ('lost_files', 'checkpoint files lost'), ('unreadable_files', 'unreadable checkpoint files'),
           ('changed_files', 'complete files changed to different weights'),
           ('compared_checkpoints', 'checkpoints compared with the reference'),
           ('mismatched_iterations', 'checkpoints differing from the reference'),
           ('final_weights_equal', 'final weights bitwise equal to the reference'), ('seconds', 'wall time (s)')]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--cycles', type=int, default=50)
    parser.add_argument('--total-iter', type=int, default=200)
    parser.add_argument('--save-freq', type=int, default=2)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--write-delay', type=float, default=0.05, help='seconds added to each fsync in the child')
    parser.add_argument('--workdir', default='resume_soak')
    parser.add_argument('--json', default=None)
    a = parser.parse_args(argv)
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    figures = run_soak(a.workdir, a.cycles, a.total_iter, a.save_freq, a.seed, a.write_delay)
    console.info('')
    for key, label in SUMMARY:
        console.info(f'{label:52s} {figures[key]}')
    if a.json:
        with open(a.json, 'w') as f:
            json.dump(figures, f, indent=2)
    ok = (figures['final_weights_equal'] and not figures['mismatched_iterations'] and not figures['lost_files']
          and not figures['unreadable_files'] and not figures['changed_files'])
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
