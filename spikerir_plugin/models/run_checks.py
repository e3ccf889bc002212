"""Checks that turn the device and data mistakes of a plugin run into one clear error naming the option and the fix.

basicsr reports these from deep inside, after the experiment folder was created (or an earlier run under the same
name moved aside): ``num_gpu: 1`` without CUDA as torch's "Found no NVIDIA driver", an LMDB without
``meta_info.txt`` as a bare FileNotFoundError, a 1-channel dataset feeding a 3-channel network as a convolution
error at the first iteration. The plugin's models run ``check_launch`` in their first pipeline hook (before basicsr
touches the experiment folder) and ``check_device`` / ``check_input_channels`` when they are built.
"""
import inspect
import os

import torch

# constructor arguments archs use for the number of input image channels
_CHANNEL_ARGS = ('in_channels', 'inp_channels', 'img_channel', 'num_in_ch', 'in_chans', 'in_nc', 'in_ch')
_COLOUR_DATASETS = ('PairedImageDataset', 'SingleImageDataset')
_KNOWN_DATASETS = _COLOUR_DATASETS + ('GaussianDenoiseDataset',)  # their dataroots are folders (disk backend)


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


def check_dataset_paths(opt):
    """Every dataroot exists; every LMDB one is a ``.lmdb`` folder with the meta_info.txt basicsr reads its keys
    from."""
    for phase, dataset_opt in (opt.get('datasets') or {}).items():
        if not isinstance(dataset_opt, dict):
            continue
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


def check_launch(opt):
    """What can be checked before basicsr creates (or moves aside) the experiment folder."""
    check_device(opt)
    check_dataset_paths(opt)


# ------------------------------------------------------------------------------------------------ input channels
def dataset_channels(phase, dataset_opt):
    """(channels, the option that sets them) of the images a dataset yields, or (None, None) when unknown."""
    kind = dataset_opt.get('type')
    if kind == 'GaussianDenoiseDataset':
        value = dataset_opt.get('in_ch')
        return int(value if value is not None else 3), f'datasets.{phase}.in_ch: {value if value is not None else 3}'
    if kind in _COLOUR_DATASETS:
        if dataset_opt.get('color') == 'y':
            return 1, f'datasets.{phase}.color: y'
        return 3, f'datasets.{phase} ({kind} reads colour images; color: y reads the Y channel)'
    return None, None


def channel_argument(net_opt):
    """(name, value shown) of the arch argument that sets a network's input channels, e.g. ('in_channels', '3')."""
    for arg in _CHANNEL_ARGS:
        if arg in net_opt:
            return arg, f': {net_opt[arg]}'
    try:
        from basicsr.utils.registry import ARCH_REGISTRY
        params = inspect.signature(ARCH_REGISTRY.get(net_opt['type'])).parameters
    except Exception:  # an arch that cannot be inspected
        return None, ''
    arg = next((a for a in _CHANNEL_ARGS if a in params), None)
    if arg is None:
        return None, ''
    default = params[arg].default
    return arg, (f' (default {default})' if default is not inspect.Parameter.empty else '')


def _accepts(net, channels, device):
    """Whether ``net`` runs on a small ``channels``-channel input (eval mode, no gradient, state restored)."""
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

    The count a network declares (``feature_hints.input_channels``) is trusted only when a small forward with the
    dataset's channel count fails too: some archs (e.g. RRDBNet at scale 1) pixel-unshuffle their input, so their
    first convolution sees more channels than the image has."""
    from .feature_hints import input_channels
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
            if declared == channels or _accepts(net, channels, device):
                continue
            arg, shown = channel_argument(opt.get(key) or {})
            option = f'{key}.{arg}{shown}' if arg else f'{key} (its input-channel argument)'
            raise ValueError(f'{data_option} gives {channels}-channel images, but {key} {type(net).__name__} reads '
                             f'{declared} channels ({option}): make them agree, e.g. set {key}.{arg or "<channels>"}: '
                             f'{channels}, or give the dataset {declared}-channel images')
