"""Strict, explicit loading of network weights from a checkpoint, with errors that name the option to fix.

Used for the frozen teacher (network_t), by the energy report and by the demo; basicsr's own load_network stays in
charge of network_g inside the pipeline (resume, EMA keys)."""
import os

import torch
from basicsr.utils import get_root_logger

from spikerir_compat import torch_load

_MAX_LISTED = 20


def _listing(keys):
    keys = sorted(keys)
    more = len(keys) - _MAX_LISTED
    return ', '.join(keys[:_MAX_LISTED]) + (f' ... ({more} more)' if more > 0 else '')


def _is_state_dict(obj):
    return isinstance(obj, dict) and bool(obj) and all(torch.is_tensor(v) for v in obj.values())


def load_weights(net, path, param_key='params', strict=True, which='t'):
    """Load checkpoint ``path`` into ``net`` and return ``net``.

    param_key: the entry holding the state dict ('params' / 'params_ema' fall back to each other, because basicsr's
    resume rewrites params_ema to params; None = the file is a raw state dict, which is also accepted when the key
    is absent). strict: any missing, unexpected or mis-shaped key is an error listing them; otherwise what fits is
    loaded. ``which`` ('g' or 't') names the options in the error messages (path.pretrain_network_<which>, ...)."""
    path_opt, key_opt, strict_opt = f'path.pretrain_network_{which}', f'path.param_key_{which}', \
        f'path.strict_load_{which}'
    role = {'t': 'teacher', 'g': 'network_g'}.get(which, f'network_{which}')
    if path is None:
        raise ValueError(f'{path_opt} is required when network_{which} is set (a checkpoint of the trained '
                         'network, e.g. basicsr net_g_<iter>.pth or an official NAFNet/Restormer file)')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path_opt}: {role} checkpoint {path!r} does not exist '
                                f'(relative paths are resolved against the current directory {os.getcwd()!r})')
    ckpt = torch_load(path)
    logger = get_root_logger()
    if param_key is not None and not (isinstance(ckpt, dict) and param_key in ckpt):
        available = list(ckpt) if isinstance(ckpt, dict) else []
        fallback = {'params': 'params_ema', 'params_ema': 'params'}.get(param_key)
        if fallback in available:
            logger.info(f'{role}: {param_key} not in {path}, using {fallback}')
            param_key = fallback
        elif _is_state_dict(ckpt):
            logger.info(f'{role}: {path} is a raw state dict (no {param_key!r} entry); loading it as such')
            param_key = None
        else:
            raise KeyError(f'{key_opt}: key {param_key!r} not in {role} checkpoint {path!r}; available keys: '
                           f'{_listing(available)} (use {key_opt}: ~ for a raw state dict)')
    if param_key is not None:
        ckpt = ckpt[param_key]
    if not _is_state_dict(ckpt):
        raise ValueError(f'{path_opt}: {path!r} [{param_key}] is not a state dict of tensors')
    state = {(k[7:] if k.startswith('module.') else k): v for k, v in ckpt.items()}
    own = net.state_dict()
    missing, unexpected = set(own) - set(state), set(state) - set(own)
    mismatched = [k for k in sorted(set(own) & set(state)) if own[k].shape != state[k].shape]
    if strict and (missing or unexpected or mismatched):
        shapes = '; '.join(f'{k}: checkpoint {tuple(state[k].shape)} vs net {tuple(own[k].shape)}'
                           for k in mismatched[:_MAX_LISTED])
        raise ValueError(
            f'{role.capitalize()} checkpoint {path!r} ({key_opt}={param_key!r}) does not match network_{which} '
            f'{type(net).__name__}: check the network_{which} arguments (e.g. width/blocks). '
            f'Missing keys: [{_listing(missing)}]; unexpected keys: [{_listing(unexpected)}]; '
            f'shape mismatches: [{shapes}]. {strict_opt}: false loads what fits.')
    if not strict:
        for key in mismatched:
            state.pop(key)
        if missing or unexpected or mismatched:
            logger.warning(f'{role} loaded non-strictly: {len(missing)} missing, {len(unexpected)} unexpected, '
                           f'{len(mismatched)} size-mismatched keys skipped')
    net.load_state_dict(state, strict=strict)
    logger.info(f'Loaded {role} {type(net).__name__} from {path} [{param_key}]')
    return net
