"""The shipped options files as recipes: where they are, and the same files changed in size only.

The files in the repository's options/ folder are not a Python package. An editable install (or a source checkout)
reads them from there; a wheel carries a copy in spikerir_plugin/shipped_options/ (written by setup.py's build_py).
The demo and the benchmarks train them changed in size only (iterations with their schedules, crops, batch, data
folders, workers), and compare arms at equal compute from step times measured round robin in one process.
"""
import copy
import os

import yaml

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
COPY_DIR_NAME = 'shipped_options'  # setup.py writes the wheel's copy under this name inside the package


def options_folders():
    """Where shipped options files are looked for, in order: the source checkout's options/ (editable installs,
    so edits there take effect), then the copy a wheel carries."""
    return [os.path.normpath(os.path.join(PACKAGE_DIR, os.pardir, 'options')),
            os.path.join(PACKAGE_DIR, COPY_DIR_NAME)]


def shipped_options_path(name):
    """The path of the shipped options file ``name`` (e.g. 'train_SpikerIR_GaussianDenoise_sigma25.yml'; a leading
    'options/' is accepted)."""
    head, base = os.path.split(str(name))
    if not base or head not in ('', 'options'):
        raise ValueError(f'shipped options file {name!r}: expected a file name such as '
                         f"'train_SpikerIR_GaussianDenoise_sigma25.yml' (optionally under 'options/')")
    folders = options_folders()
    for folder in folders:
        path = os.path.join(folder, base)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f'shipped options file {base!r} not found; looked in: {", ".join(folders)} (a source '
                            f'checkout has it in options/, a wheel in spikerir_plugin/{COPY_DIR_NAME}/)')


def load_shipped_options(name):
    """The shipped options file ``name`` as a dict."""
    path = shipped_options_path(name)
    with open(path, encoding='utf-8') as f:
        opt = yaml.safe_load(f)
    if not isinstance(opt, dict) or not isinstance(opt.get('train'), dict):
        raise ValueError(f'{path}: not a training options file (no `train` section)')
    return opt


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


def resized(opt, iters, train_dir, val_dir, val_name, gt_size, batch, train_backend=None):
    """A copy of a shipped options dict changed in size only: iterations (schedules scaled), training crops, batch,
    data folders, no data workers; ``train_backend`` (e.g. 'lmdb' for a .lmdb training folder) replaces the training
    set's io_backend, else the file's stays."""
    opt = rescale_iterations(copy.deepcopy(opt), iters)
    opt['datasets']['train'].update(dataroot_gt=train_dir, gt_size=int(gt_size), batch_size_per_gpu=int(batch),
                                    num_worker_per_gpu=0, persistent_workers=False)
    if train_backend is not None:
        opt['datasets']['train']['io_backend'] = {'type': train_backend}
    opt['datasets']['val'].update(dataroot_gt=val_dir, name=val_name)
    return opt


def with_untrained_teachers(option_sets, folder):
    """Copies of ``option_sets`` whose every network_t loads freshly initialised weights saved under ``folder``:
    a step costs the same with an untrained teacher, so steps can be timed before the teachers are trained. Each
    file is named by its network's options and written whole before it appears, so calls sharing ``folder`` (two
    benchmarks on one work folder) never read another's network or a half-written file."""
    import hashlib
    import json
    import torch
    from basicsr.archs import build_network
    sets = copy.deepcopy(option_sets)
    for opt in sets.values():
        if not opt.get('network_t'):
            continue
        digest = hashlib.sha1(json.dumps(opt['network_t'], sort_keys=True).encode()).hexdigest()[:10]
        path = os.path.join(folder, f'untrained_teacher_{digest}.pth')
        torch.manual_seed(0)
        state = build_network(copy.deepcopy(opt['network_t'])).state_dict()
        partial = f'{path}.{os.getpid()}.partial'
        torch.save({'params': state, 'params_ema': state}, partial)
        os.replace(partial, path)
        opt['path']['pretrain_network_t'] = path
    return sets


def step_costs(option_sets, steps, device):
    """Median seconds of one training step (the model's optimize_parameters on a random batch of the options'
    batch and crop size) per options dict, the models stepped round-robin in this process so that the ratios
    compare like with like on a busy machine."""
    import statistics
    import tempfile
    import time
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


def equal_compute_iterations(budget_s, step_s):
    """Iterations of a run whose step costs ``step_s`` seconds within a compute budget of ``budget_s`` (at least 1)."""
    if step_s <= 0:
        raise ValueError(f'step time must be positive, got {step_s}')
    return max(int(round(budget_s / step_s)), 1)
