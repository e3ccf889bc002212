"""Strict, explicit loading of a frozen teacher checkpoint (clear errors instead of basicsr's KeyErrors)."""
import os

from basicsr.utils import get_root_logger

from spikerir_compat import torch_load

_MAX_LISTED = 20


def _listing(keys):
    keys = sorted(keys)
    more = len(keys) - _MAX_LISTED
    return ', '.join(keys[:_MAX_LISTED]) + (f' ... ({more} more)' if more > 0 else '')


def load_teacher_weights(net, path, param_key='params', strict=True):
    """Load ``path`` into ``net``. param_key None = the file is a raw state dict; 'params' and 'params_ema' fall
    back to each other (basicsr's resume rewrites params_ema to params)."""
    if path is None:
        raise ValueError('path.pretrain_network_t is required when network_t is set (a checkpoint of the '
                         'trained teacher, e.g. basicsr net_g_<iter>.pth or an official NAFNet/Restormer file)')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'path.pretrain_network_t: teacher checkpoint {path!r} does not exist '
                                f'(relative paths are resolved against the current directory {os.getcwd()!r})')
    ckpt = torch_load(path)
    if param_key is not None:
        if not isinstance(ckpt, dict) or param_key not in ckpt:
            available = list(ckpt) if isinstance(ckpt, dict) else []
            fallback = {'params': 'params_ema', 'params_ema': 'params'}.get(param_key)
            if fallback in available:
                get_root_logger().info(f'Teacher: {param_key} not in {path}, using {fallback}')
                param_key = fallback
            else:
                raise KeyError(f'path.param_key_t: key {param_key!r} not in teacher checkpoint {path!r}; available '
                               f'keys: {_listing(available)} (use param_key_t: ~ for a raw state dict)')
        ckpt = ckpt[param_key]
    state = {(k[7:] if k.startswith('module.') else k): v for k, v in ckpt.items()}
    own = net.state_dict()
    missing, unexpected = set(own) - set(state), set(state) - set(own)
    mismatched = [f'{k}: checkpoint {tuple(state[k].shape)} vs net {tuple(own[k].shape)}'
                  for k in sorted(set(own) & set(state)) if own[k].shape != state[k].shape]
    if strict and (missing or unexpected or mismatched):
        raise ValueError(
            f'Teacher checkpoint {path!r} (param_key_t={param_key!r}) does not match network_t '
            f'{type(net).__name__}: check the network_t arguments (e.g. width/blocks). '
            f'Missing keys: [{_listing(missing)}]; unexpected keys: [{_listing(unexpected)}]; '
            f'shape mismatches: [{"; ".join(mismatched[:_MAX_LISTED])}]. strict_load_t: false loads what fits.')
    if not strict:
        for item in mismatched:
            state.pop(item.split(':')[0])
        if missing or unexpected or mismatched:
            get_root_logger().warning(f'Teacher loaded non-strictly: {len(missing)} missing, {len(unexpected)} '
                                      f'unexpected, {len(mismatched)} size-mismatched keys skipped')
    net.load_state_dict(state, strict=strict)
    get_root_logger().info(f'Loaded teacher {type(net).__name__} from {path} [{param_key}]')
