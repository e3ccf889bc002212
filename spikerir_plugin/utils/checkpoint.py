"""The one reader of checkpoints and training states, and strict weight loading with errors that name the option.

Every file the plugin loads (teacher, student pretrain, EMA, resume state, energy report, demo, restore) goes
through ``read_checkpoint``, which turns each way a file can be unreadable into one error naming the file, the
option that pointed at it and the likely fix: missing, empty (a run killed while writing it with a writer that is
not atomic), truncated or corrupt archive, not a torch file at all, or a pickle that ``torch.load(weights_only=True)``
refuses (naming the global and how to allow it for a trusted file). ``load_weights`` then loads a state dict from it
strictly, listing the keys present when the param key or the network does not match.
"""
import os
import re

import torch
from basicsr.utils import get_root_logger

_MAX_LISTED = 20
_GLOBAL_RE = re.compile(r'GLOBAL ([\w.]+) was not an allowed global')


class CheckpointError(ValueError):
    """A checkpoint or training state that cannot be used; the message names the file, the option and the fix."""


def read_checkpoint(path, key='path', kind='checkpoint', fix=None, map_location='cpu'):
    """torch.load(path, weights_only=True) on the CPU, with a clear error for every kind of unreadable file.

    key: the option that named the file (e.g. ``path.pretrain_network_t``), quoted in the errors.
    kind: what the file is ('teacher checkpoint', 'training state', ...). fix: a sentence appended to errors about
    a damaged file (what the user can do, e.g. resume from an earlier state)."""
    where = f'{key}: {kind} {str(path)!r}'
    if path is None:
        raise ValueError(f'{key} is not set: give the path of the {kind}')
    if not os.path.exists(path):
        raise FileNotFoundError(f'{where} does not exist (relative paths are resolved against the current '
                                f'directory {os.getcwd()!r})')
    if os.path.isdir(path):
        raise CheckpointError(f'{where} is a directory, not a file')
    damaged = f' {fix}' if fix else ' Re-create or re-download it.'
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointError(f'{where} is empty (0 bytes): it was probably cut off while being written (a killed '
                              f'run or a full disk).{damaged}')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises RuntimeError, EOFError, KeyError, UnpicklingError, ... by case
        message = str(error)
        if 'weights_only' in message.lower() or 'weights only' in message.lower():
            unsafe = _GLOBAL_RE.search(message)
            if unsafe:
                name = unsafe.group(1)
                raise CheckpointError(
                    f'{where} holds a pickled object of type {name}, which torch.load(weights_only=True) refuses '
                    f'to load. If you trust the file, allow it before training: `import torch; '
                    f'torch.serialization.add_safe_globals([{name}])` (import {name.rpartition(".")[0] or name} '
                    f'first), or save only the state dict: torch.save({{"params": net.state_dict()}}, path)'
                ) from None
        with open(path, 'rb') as f:
            head = f.read(4)
        if head.startswith(b'PK'):
            raise CheckpointError(f'{where} is a damaged torch archive ({size} bytes; torch: '
                                  f'{message.splitlines()[0][:160]}): it was probably truncated or corrupted '
                                  f'while being written or copied.{damaged}') from None
        raise CheckpointError(f'{where} is not a torch checkpoint (torch.save file) or is corrupt '
                              f'({size} bytes, starts with {head!r}; torch: {type(error).__name__}: '
                              f'{message.splitlines()[0][:160] if message else ""}).{damaged}') from None


def _listing(keys):
    keys = sorted(keys)
    more = len(keys) - _MAX_LISTED
    return ', '.join(keys[:_MAX_LISTED]) + (f' ... ({more} more)' if more > 0 else '')


def _is_state_dict(obj):
    return isinstance(obj, dict) and bool(obj) and all(torch.is_tensor(v) for v in obj.values())


def load_weights(net, path, param_key='params', strict=True, which='t', option=None):
    """Load checkpoint ``path`` into ``net`` and return ``net``.

    param_key: the entry holding the state dict ('params' / 'params_ema' fall back to each other, because basicsr's
    resume rewrites params_ema to params; None = the file is a raw state dict, which is also accepted when the key
    is absent). strict: any missing, unexpected or mis-shaped key is an error listing them; otherwise what fits is
    loaded. ``which`` ('g' or 't') names the options in the error messages (path.pretrain_network_<which>, ...);
    ``option`` replaces those names for a command-line tool (e.g. '--ckpt')."""
    path_opt, key_opt, strict_opt = f'path.pretrain_network_{which}', f'path.param_key_{which}', \
        f'path.strict_load_{which}'
    if option is not None:
        path_opt, key_opt, strict_opt = option, f'{option} param key', f'{option} strict'
    role = {'t': 'teacher', 'g': 'network_g'}.get(which, f'network_{which}')
    if path is None:
        raise ValueError(f'{path_opt} is required when network_{which} is set (a checkpoint of the trained '
                         'network, e.g. basicsr net_g_<iter>.pth or an official NAFNet/Restormer file)')
    ckpt = read_checkpoint(path, path_opt, f'{role} checkpoint')
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
