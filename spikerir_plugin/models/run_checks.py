"""Checks that turn the option, device and data mistakes of a plugin run into one clear error naming the option and
the fix, before anything is created or moved on disk.

basicsr reports these from deep inside, after the experiment folder was created (or an earlier run under the same
name moved aside), or not at all: ``num_gpu: 1`` without CUDA as torch's "Found no NVIDIA driver", an LMDB without
``meta_info.txt`` as a bare FileNotFoundError, a 1-channel dataset feeding a 3-channel network as a convolution
error at the first iteration, a renamed file in paired folders as a bare assertion, a training set smaller than one
batch or ``total_iter: 0`` as a run that trains nothing and exits 0, a missing step-1 checkpoint as a traceback. The
plugin's models run ``check_launch`` in their first pipeline hook (before basicsr touches the experiment folder)
and ``check_device`` / ``check_input_channels`` again when they are built.
"""
import copy
import glob
import inspect
import math
import os
import re

import torch

from spikerir_plugin.archs.arch_util import INPUT_CHANNEL_ARGS, input_channels

_COLOUR_DATASETS = ('PairedImageDataset', 'SingleImageDataset')
_KNOWN_DATASETS = _COLOUR_DATASETS + ('GaussianDenoiseDataset',  # their dataroots are folders (disk backend)
                                      'UnlabelledImageDataset', 'RainStreakDataset')
_NO_GT_DATASETS = ('UnlabelledImageDataset',)  # training sets with samples that have no ground truth


def check_device(opt):
    """num_gpu >= 1 on a machine where torch sees no CUDA device: say which values work here."""
    num_gpu = opt.get('num_gpu', 0)
    if isinstance(num_gpu, int) and num_gpu > 0 and not torch.cuda.is_available():
        build = f'CUDA {torch.version.cuda}' if torch.version.cuda else 'a CPU-only build'
        raise ValueError(f'num_gpu: {num_gpu} asks for CUDA, but torch {torch.__version__} ({build}) sees no CUDA '
                         'device on this machine: set num_gpu: 0 to run on the CPU, or num_gpu: auto to use the '
                         'GPUs that are present (none here)')


def _prepare_command(phase, dataset_opt, key):
    """The spikerir-prepare command that writes the LMDB (and its meta_info.txt) named by ``key``."""
    path = dataset_opt[key]
    if dataset_opt.get('dataroot_lq') and dataset_opt.get('dataroot_gt'):
        out = os.path.dirname(os.path.normpath(path)) or '.'
        return (f'spikerir-prepare paired --input <degraded images> --target <clean images> --out {out} --lmdb '
                f'(writes {out}/input.lmdb and {out}/target.lmdb: set datasets.{phase}.dataroot_lq and dataroot_gt '
                'to them), or spikerir-prepare sidd-train / sidd-val for SIDD')
    return f'spikerir-prepare folder-lmdb --src <folder of images> --out {path}'


def dataset_specs(opt):
    """(section, dataset options) of every dataset of the options: each phase's, preceded by the ``labelled``
    dataset an UnlabelledImageDataset mixes in (section '<phase>.labelled', with its parent's phase and scale)."""
    for phase, dataset_opt in (opt.get('datasets') or {}).items():
        if not isinstance(dataset_opt, dict):
            continue
        nested = dataset_opt.get('labelled')
        if dataset_opt.get('type') in _NO_GT_DATASETS and isinstance(nested, dict):
            yield f'{phase}.labelled', {'io_backend': {'type': 'disk'}, 'name': f'{dataset_opt.get("name")}.labelled',
                                        **nested,
                                        'phase': dataset_opt.get('phase', phase.split('_')[0]),
                                        'scale': dataset_opt.get('scale', opt.get('scale', 1))}
        yield phase, dataset_opt  # after its labelled dataset, whose pairing errors are the clearer ones


def check_dataset_paths(opt):
    """Every dataroot exists; every LMDB one is a ``.lmdb`` folder with the meta_info.txt basicsr reads its keys
    from."""
    for phase, dataset_opt in dataset_specs(opt):
        backend = (dataset_opt.get('io_backend') or {}).get('type', 'disk')
        for key in ('dataroot_gt', 'dataroot_lq'):
            path = dataset_opt.get(key)
            if not isinstance(path, str):
                continue
            option = f'datasets.{phase}.{key}'
            if backend == 'lmdb':
                if not path.endswith('.lmdb'):
                    raise ValueError(f'{option}: {path!r} must be an LMDB folder ending in .lmdb with io_backend '
                                     f'type lmdb; make one with {_prepare_command(phase, dataset_opt, key)}')
                if not os.path.isfile(os.path.join(path, 'data.mdb')):
                    raise FileNotFoundError(f'{option}: {path!r} is not an LMDB (no data.mdb); make it with '
                                            f'{_prepare_command(phase, dataset_opt, key)}')
                if not os.path.isfile(os.path.join(path, 'meta_info.txt')):
                    raise FileNotFoundError(f'{option}: LMDB {path!r} has no meta_info.txt (the list of keys basicsr '
                                            f'reads); write the LMDB with {_prepare_command(phase, dataset_opt, key)}')
            elif backend == 'disk' and dataset_opt.get('type') in _KNOWN_DATASETS and not os.path.exists(path):
                raise FileNotFoundError(f'{option}: {path!r} does not exist (relative paths are resolved against '
                                        f'the current directory {os.getcwd()!r})')


def check_total_iter(opt):
    """A training run trains: train.total_iter is an integer >= 1."""
    value = (opt.get('train') or {}).get('total_iter')
    try:
        ok = float(value) >= 1 and float(value) == int(float(value))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f'train.total_iter: {value!r}: a training run needs an integer total_iter >= 1 (the number '
                         'of iterations to train; with 0 or less basicsr saves the untrained network and exits 0)')


def _options_folders():
    """Folders whose *.yml files may train a checkpoint: ./options and the plugin's shipped options."""
    shipped = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'options')
    return [f for f in dict.fromkeys((os.path.abspath('options'), shipped)) if os.path.isdir(f)]


def training_options_for(path):
    """(experiment name, [options files that train it]) for a checkpoint under experiments/<name>/models/."""
    found = re.search(r'(?:^|[\\/])experiments[\\/]([^\\/]+)[\\/]models[\\/]', str(path))
    if not found:
        return None, []
    name = found.group(1)
    line = re.compile(rf'^name:\s*{re.escape(name)}\s*(#.*)?$', re.M)
    files = []
    for folder in _options_folders():
        for file in sorted(glob.glob(os.path.join(folder, '*.yml'))):
            with open(file, encoding='utf-8') as f:
                if line.search(f.read()):
                    files.append(os.path.relpath(file))
    return name, files


def missing_checkpoint_advice(path):
    """What writes a checkpoint that does not exist yet (the training step it comes from), or ''."""
    name, files = training_options_for(path)
    if files:
        return (f' It is the model that training with {files[0]} (name: {name}) writes: run that first, e.g. '
                f'python basicsr/train.py -opt {files[0]}')
    if name:
        return f' It is written by a training run named {name}: run that first, or point the option at a checkpoint.'
    return ''


def check_checkpoint_exists(path, key, kind):
    """A checkpoint an option names exists; else an error saying which training run writes it."""
    from spikerir_plugin.utils.checkpoint import CheckpointMissing
    if isinstance(path, str) and not os.path.exists(path):
        raise CheckpointMissing(f'{key}: {kind} {path!r} does not exist (relative paths are resolved against the '
                                f'current directory {os.getcwd()!r}).{missing_checkpoint_advice(path)}', path)


# ------------------------------------------------------------------------------------------------ datasets
_PAIRED = ('PairedImageDataset',)
# datasets built at launch: basicsr's image datasets and the plugin's, whose constructors do not log (a dataset that
# calls basicsr's get_root_logger before the pipeline sets it up would cost the run its log file)
_BUILT_AT_LAUNCH = _KNOWN_DATASETS
_MAX_LISTED = 5


def _listed(names):
    names = sorted(names)
    return ', '.join(names[:_MAX_LISTED]) + (f' ... ({len(names) - _MAX_LISTED} more)' if len(names) > _MAX_LISTED
                                             else '')


def _folder_names(folder, backend):
    """{name: meta_info line}: the files of a folder, or the keys of an LMDB (as basicsr reads them: the name
    before the first dot) with their meta_info.txt lines."""
    if backend == 'lmdb':
        with open(os.path.join(folder, 'meta_info.txt')) as f:
            return {line.split('.')[0]: line for line in f if line.strip()}
    return {name: None for name in os.listdir(folder)  # files only, as basicsr's scandir lists them
            if not name.startswith('.') and os.path.isfile(os.path.join(folder, name))}


def _pairing_problem(dataset_opt):
    """Which files of paired folders have no partner (names as basicsr pairs them: filename_tmpl on the GT
    name's stem, the GT's extension), or None."""
    backend = (dataset_opt.get('io_backend') or {}).get('type', 'disk')
    lq_root, gt_root = dataset_opt.get('dataroot_lq'), dataset_opt.get('dataroot_gt')
    if backend not in ('disk', 'lmdb') or not (isinstance(lq_root, str) and isinstance(gt_root, str)):
        return None
    if backend == 'disk' and dataset_opt.get('meta_info_file'):
        return None  # basicsr pairs only the listed files (and names a missing one itself)
    tmpl = dataset_opt.get('filename_tmpl', '{}')
    gt_names, lq_names = _folder_names(gt_root, backend), _folder_names(lq_root, backend)
    if backend == 'lmdb':  # basicsr pairs LMDB keys as they are
        expected = {n: n for n in gt_names}
    else:
        expected = {tmpl.format(os.path.splitext(n)[0]) + os.path.splitext(n)[1]: n for n in gt_names}
    no_lq = [gt for lq, gt in expected.items() if lq not in lq_names]
    no_gt = [lq for lq in lq_names if lq not in expected]
    if not no_lq and not no_gt:
        return None
    parts = []
    if no_lq:
        parts.append(f'{len(no_lq)} GT file(s) in dataroot_gt {gt_root!r} have no LQ file in dataroot_lq {lq_root!r} '
                     f'({_listed(no_lq)})')
    if no_gt:
        parts.append(f'{len(no_gt)} LQ file(s) in dataroot_lq {lq_root!r} have no GT file in dataroot_gt '
                     f'{gt_root!r} ({_listed(no_gt)})')
    how = ('LMDB keys pair by name' if backend == 'lmdb' else
           f'LQ names are filename_tmpl {tmpl!r} applied to the GT names')
    return '; '.join(parts) + f' ({how})'


def _size(path_or_key, backend, meta):
    """(h, w) of one image: its header on disk, meta_info.txt in an LMDB."""
    if backend == 'lmdb':
        line = meta.get(path_or_key) or ''
        found = re.search(r'\((\d+),\s*(\d+)', line)
        return (int(found.group(1)), int(found.group(2))) if found else None
    from PIL import Image
    with Image.open(path_or_key) as img:
        if img.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF orientation: cv2 (basicsr) rotates by 90 degrees
            return img.width, img.height
        return img.height, img.width


def _pair_size_problem(phase, dataset, dataset_opt, scale):
    """The first pair whose sizes cannot work (training: GT exactly scale x LQ; validation: GT at least that)."""
    backend = (dataset_opt.get('io_backend') or {}).get('type', 'disk')
    if backend not in ('disk', 'lmdb') or not isinstance(getattr(dataset, 'paths', None), list):
        return None
    metas = {}
    if backend == 'lmdb':
        metas = {key: _folder_names(dataset_opt[key], 'lmdb') for key in ('dataroot_lq', 'dataroot_gt')}
    for pair in dataset.paths:  # headers only (an LMDB's meta_info.txt): a fraction of a second per 1000 pairs
        if not isinstance(pair, dict) or 'lq_path' not in pair:
            return None
        try:
            lq = _size(pair['lq_path'], backend, metas.get('dataroot_lq'))
            gt = _size(pair['gt_path'], backend, metas.get('dataroot_gt'))
        except Exception:  # noqa: BLE001 - unreadable or over PIL's size limit: the loader reads it (or names it)
            continue
        if lq is None or gt is None:
            continue
        want = (lq[0] * scale, lq[1] * scale)
        bad = gt != want if phase == 'train' else (gt[0] < want[0] or gt[1] < want[1])
        if bad:
            rule = 'exactly' if phase == 'train' else 'at least'
            return (f'LQ {pair["lq_path"]!r} is {lq[0]}x{lq[1]} and GT {pair["gt_path"]!r} is {gt[0]}x{gt[1]}, but '
                    f'each GT must be {rule} scale ({scale}) times its LQ: fix or remove this pair, or check that '
                    'dataroot_lq and dataroot_gt (and filename_tmpl) pair the right files')
    return None


def check_datasets(opt):
    """Every dataset of the options builds; paired folders pair; pair sizes fit the scale; the training set yields
    at least one batch per process and epoch. Datasets are built from their classes (no logging: basicsr's logger
    is set up later by the pipeline)."""
    from basicsr.utils.registry import DATASET_REGISTRY
    scale = opt.get('scale', 1)
    for phase, dataset_opt in dataset_specs(opt):
        if dataset_opt.get('type') not in _BUILT_AT_LAUNCH:
            continue
        if '.labelled' in phase and dataset_opt['type'] not in _PAIRED:
            continue  # built by its parent below; a paired one's files are paired and sized here
        dataset_opt = dict(dataset_opt, phase=dataset_opt.get('phase', phase.split('_')[0]),
                           scale=dataset_opt.get('scale', scale))
        where = f'datasets.{phase} ({dataset_opt.get("name")!r})'
        if dataset_opt['type'] in _PAIRED:
            problem = _pairing_problem(dataset_opt)
            if problem:
                raise ValueError(f'{where}: the paired folders do not pair: {problem}')
        try:
            dataset = DATASET_REGISTRY.get(dataset_opt['type'])(copy.deepcopy(dataset_opt))
        except (AssertionError, KeyError, ValueError, FileNotFoundError) as error:
            raise ValueError(f'{where}: {dataset_opt["type"]} cannot be built: {error}') from error
        if dataset_opt['type'] in _PAIRED:
            problem = _pair_size_problem(dataset_opt['phase'], dataset, dataset_opt, scale)
            if problem:
                raise ValueError(f'{where}: {problem}')
        if dataset_opt['phase'] == 'train' and '.labelled' not in phase:
            _check_one_batch(where, dataset_opt, len(dataset), opt.get('world_size', 1))


def _check_one_batch(where, dataset_opt, size, world_size):
    ratio = dataset_opt.get('dataset_enlarge_ratio', 1)
    per_process = math.ceil(size * ratio / max(int(world_size), 1))
    batch = dataset_opt.get('batch_size_per_gpu')
    if isinstance(batch, int) and batch >= 1 and per_process >= batch:
        return
    if size == 0:
        raise ValueError(f'{where}: the training set is empty: check dataroot_gt / dataroot_lq')
    raise ValueError(f'{where}: {size} training image(s) (dataset_enlarge_ratio {ratio}, {world_size} process(es)) '
                     f'give {per_process} per process and epoch, fewer than batch_size_per_gpu {batch!r}: basicsr '
                     'drops the incomplete batch, so no batch would be drawn and the run would train nothing. Set '
                     f'batch_size_per_gpu to at most {per_process}, raise dataset_enlarge_ratio, or add images')


def check_ground_truth(opt):
    """A training set with samples that have no ground truth needs a model whose teacher labels them (a model class
    with ``labels_missing_gt`` and a ``network_t``)."""
    from basicsr.utils.registry import MODEL_REGISTRY
    model_type = opt.get('model_type')
    model = MODEL_REGISTRY.get(model_type) if model_type in MODEL_REGISTRY else None
    if getattr(model, 'labels_missing_gt', False) and opt.get('network_t'):
        return
    for phase, dataset_opt in (opt.get('datasets') or {}).items():
        if isinstance(dataset_opt, dict) and dataset_opt.get('type') in _NO_GT_DATASETS and phase.startswith('train'):
            why = 'has no network_t' if getattr(model, 'labels_missing_gt', False) else 'trains without a teacher'
            raise ValueError(f'datasets.{phase}.type: {dataset_opt["type"]} yields images without ground truth '
                             f'(no gt, or has_gt false), and {model_type} {why} to label them: use model_type: '
                             'SpikerIRDistillModel with network_t and path.pretrain_network_t (the teacher\'s output '
                             'becomes their target), or a dataset with ground truth (PairedImageDataset, '
                             'GaussianDenoiseDataset)')


def check_launch(opt):
    """What can be checked before basicsr creates (or moves aside) the experiment folder."""
    check_device(opt)
    check_dataset_paths(opt)
    if opt.get('is_train', True):
        check_total_iter(opt)
        check_ground_truth(opt)
    check_datasets(opt)


# ------------------------------------------------------------------------------------------------ input channels
def dataset_channels(phase, dataset_opt):
    """(channels, the option that sets them) of the images a dataset yields, or (None, None) when unknown."""
    kind = dataset_opt.get('type')
    if kind in ('GaussianDenoiseDataset', 'UnlabelledImageDataset', 'RainStreakDataset'):
        value = dataset_opt.get('in_ch')
        return int(value if value is not None else 3), f'datasets.{phase}.in_ch: {value if value is not None else 3}'
    if kind in _COLOUR_DATASETS:
        if dataset_opt.get('color') == 'y':
            return 1, f'datasets.{phase}.color: y'
        return 3, f'datasets.{phase} ({kind} reads colour images; color: y reads the Y channel)'
    return None, None


def channel_argument(net_opt):
    """(name, value shown) of the arch argument that sets a network's input channels, e.g. ('in_channels', '3')."""
    for arg in INPUT_CHANNEL_ARGS:
        if arg in net_opt:
            return arg, f': {net_opt[arg]}'
    try:
        from basicsr.utils.registry import ARCH_REGISTRY
        params = inspect.signature(ARCH_REGISTRY.get(net_opt['type'])).parameters
    except Exception:  # an arch that cannot be inspected
        return None, ''
    arg = next((a for a in INPUT_CHANNEL_ARGS if a in params), None)
    if arg is None:
        return None, ''
    default = params[arg].default
    return arg, (f' (default {default})' if default is not inspect.Parameter.empty else '')


def meta_network(net_opt, key):
    """The arch of ``net_opt`` built on the meta device (names and shapes, no memory), or None when the arch cannot
    be built there; wrong arguments are an error naming ``key``."""
    from basicsr.utils.registry import ARCH_REGISTRY
    arch = ARCH_REGISTRY.get(net_opt['type'])
    kwargs = {k: v for k, v in net_opt.items() if k != 'type'}
    try:
        inspect.signature(arch).bind(**kwargs)
    except TypeError as error:
        raise ValueError(f'{key}: {net_opt["type"]} cannot be built from {kwargs}: {error}') from None
    except ValueError:  # no signature to check
        pass
    try:
        with torch.device('meta'):
            return arch(**kwargs)
    except Exception:  # an arch that computes real values while it is built: checked when the model builds it
        return None


def _accepts(net, channels, device, net_opt=None):
    """Whether ``net`` runs on a small ``channels``-channel input (eval mode, no gradient, state restored). A
    network on the meta device is built for real from ``net_opt`` first."""
    if net_opt is not None and any(p.is_meta for p in net.parameters()):
        from basicsr.utils.registry import ARCH_REGISTRY
        net = ARCH_REGISTRY.get(net_opt['type'])(**{k: v for k, v in net_opt.items() if k != 'type'})
        device = 'cpu'
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros(1, channels, 64, 64, device=device))
        return True
    except Exception:
        return False
    finally:
        net.train(was_training)


def check_input_channels(opt, nets, device):
    """Each network in ``nets`` ({option key: bare network}) reads as many channels as every dataset yields.

    The count a network declares (``arch_util.input_channels``) is trusted only when a small forward with the
    dataset's channel count fails too: some archs (e.g. RRDBNet at scale 1) pixel-unshuffle their input, so their
    first convolution sees more channels than the image has."""
    for phase, dataset_opt in (opt.get('datasets') or {}).items():
        if not isinstance(dataset_opt, dict):
            continue
        channels, data_option = dataset_channels(phase, dataset_opt)
        if channels is None:
            continue
        for key, net in nets.items():
            try:
                declared = input_channels(net)
            except ValueError:
                continue
            if declared == channels or _accepts(net, channels, device, opt.get(key)):
                continue
            arg, shown = channel_argument(opt.get(key) or {})
            option = f'{key}.{arg}{shown}' if arg else f'{key} (its input-channel argument)'
            raise ValueError(f'{data_option} gives {channels}-channel images, but {key} {type(net).__name__} reads '
                             f'{declared} channels ({option}): make them agree, e.g. set {key}.{arg or "<channels>"}: '
                             f'{channels}, or give the dataset {declared}-channel images')
