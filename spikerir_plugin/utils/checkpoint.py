"""The one reader of checkpoints and training states, and strict weight loading with errors that name the option.

Every file the plugin loads (teacher, student pretrain, EMA, resume state, energy report, demo, restore) goes
through ``read_checkpoint``, which turns each way a file can be unreadable into one error naming the file, the
option that pointed at it and the likely fix: missing, empty (a run killed while writing it with a writer that is
not atomic), truncated or corrupt archive, not a torch file at all, or a pickle that ``torch.load(weights_only=True)``
refuses (naming the global and how to allow it for a trusted file). ``load_weights`` then loads a state dict from it
strictly, listing the keys present when the param key or the network does not match.
"""
import inspect
import logging
import os
import re
import zipfile

import torch
from basicsr.utils import get_root_logger

_MAX_LISTED = 20
# A non-strict load must fill at least this share of both the network's entries and the checkpoint's tensors. A
# frozen teacher never trains what was not loaded, so it needs nearly all of them; a trained network (fine-tuning
# with a new head, say) needs a clear majority.
MIN_LOADED_SHARE = {'t': 0.9, 'g': 0.5}
_LEGACY_MAGIC = b'\x80\x02\x8a\nl\xfc\x9cF'  # pickle of torch's magic number: the pre-1.6 (non-zip) format
_GLOBAL_RE = re.compile(r'GLOBAL ([\w.]+) was not an allowed global')
_UNPICKLER_RE = re.compile(r'WeightsUnpickler error:\s*(\S.*?)(?:\n\s*\n|$)', re.S)


class CheckpointError(ValueError):
    """A checkpoint or training state that cannot be used; the message names the file, the option and the fix.

    ``reason`` is the short cause ('empty (0 bytes)', 'damaged torch archive', ...) for one-line warnings."""

    def __init__(self, message, reason='', path=None):
        super().__init__(message)
        self.reason = reason or message
        self.checkpoint_path = path


class CheckpointMissing(FileNotFoundError):
    """A checkpoint or training state that does not exist (``checkpoint_path``: the file)."""

    def __init__(self, message, path=None):
        super().__init__(message)
        self.reason = 'missing'
        self.checkpoint_path = path


def _text_hint(head):
    """What a non-torch file most likely is, from its first bytes."""
    if head.startswith(b'version https://git-lfs'):
        return ' It is a Git LFS pointer, not the file itself: fetch it with `git lfs pull`.'
    if head.lstrip().lower().startswith((b'<!doctype', b'<html')):
        return ' It is an HTML page (a download link that returned a web page): download the file itself.'
    if head and all(32 <= b < 127 or b in b'\t\r\n' for b in head):
        return ' It is a text file.'
    return ''


def _refused_global(message):
    """The global named by torch's weights_only refusal, or None (a garbled name means a damaged pickle)."""
    found = _GLOBAL_RE.search(message)
    if not found:
        return None
    module, _, name = found.group(1).rpartition('.')
    return found.group(1) if module and name else None


def _bad_crc_member(path):
    """The first member of a zip-format torch file whose CRC does not match, or None. torch.load does not check
    CRCs, so flipped bytes inside tensor data would otherwise load silently as wrong weights."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        return f'<archive: {error}>'


def read_checkpoint(path, key='path', kind='checkpoint', fix=None, map_location='cpu'):
    """torch.load(path, weights_only=True) on the CPU, with a clear error for every kind of unreadable file.

    key: the option that named the file (e.g. ``path.pretrain_network_t``), quoted in the errors.
    kind: what the file is ('teacher checkpoint', 'training state', ...). fix: a sentence appended to errors about
    a missing or damaged file (what the user can do, e.g. resume from an earlier state)."""
    where = f'{key}: {kind} {str(path)!r}'
    if path is None:
        raise ValueError(f'{key} is not set: give the path of the {kind}')
    advice = f' {fix}' if fix else ' Re-create or re-download it.'
    if not os.path.exists(path):
        raise CheckpointMissing(f'{where} does not exist (relative paths are resolved against the current '
                                f'directory {os.getcwd()!r}).{" " + fix if fix else ""}', path)
    if os.path.isdir(path):
        raise CheckpointError(f'{where} is a directory, not a file', 'a directory', path)
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointError(f'{where} is empty (0 bytes): it was cut off while being written (a killed run or a '
                              f'full disk).{advice}', 'empty (0 bytes)', path)
    with open(path, 'rb') as f:
        head = f.read(64)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises RuntimeError, EOFError, KeyError, UnpicklingError, ... by case
        message = str(error)
        unsafe = _refused_global(message) if 'weights_only' in message.lower() else None
        if unsafe:
            module = unsafe.rpartition('.')[0]
            raise CheckpointError(
                f'{where} holds a pickled object of type {unsafe}, which torch.load(weights_only=True) refuses to '
                f'load (unpickling it could run arbitrary code). If you trust the file, either save its tensors '
                f'again: python -c "import torch; c = torch.load({str(path)!r}, weights_only=False); '
                f'torch.save({{\'params\': c[\'params\']}}, \'clean.pth\')" (adapt the key) and point {key} at '
                f'clean.pth; or allow the type in the process that loads it, before loading: import {module}; '
                f'torch.serialization.add_safe_globals([{unsafe}])', f'holds a pickled {unsafe}', path) from None
        unpickler = _UNPICKLER_RE.search(message)
        detail = _first_sentence(unpickler.group(1) if unpickler else message)
        if head.startswith((b'PK', _LEGACY_MAGIC)):
            raise CheckpointError(f'{where} is a damaged torch archive ({size} bytes; torch: {detail}): it was '
                                  f'truncated or corrupted while being written or copied.{advice}',
                                  'damaged torch archive', path) from None
        raise CheckpointError(f'{where} is not a torch checkpoint (a torch.save file) or is damaged ({size} bytes, '
                              f'starts with {head[:8]!r}; torch: {type(error).__name__}: {detail}).'
                              f'{_text_hint(head)}{advice}', 'not a torch file', path) from None
    if head.startswith(b'PK'):
        bad = _bad_crc_member(path)
        if bad is not None:
            raise CheckpointError(f'{where} is a damaged torch archive ({size} bytes): {bad} fails its CRC check, so '
                                  f'bytes were changed after it was written (disk or copy error).{advice}',
                                  'damaged torch archive (CRC)', path)
    return ckpt


def _logger():
    """basicsr's logger once a pipeline has set it up; before that (launch checks) the same logger unconfigured, so
    that an early message does not make basicsr's later set-up skip the run's log file."""
    from basicsr.utils import logger as basicsr_logger
    if 'basicsr' in basicsr_logger.initialized_logger:
        return get_root_logger()
    return logging.getLogger('basicsr')


def _first_sentence(text, limit=200):
    """The first sentence of an error message (torch's run on with advice for its own developers), whole words."""
    line = text.strip().split('\n')[0]
    sentence = line.split('. ')[0].rstrip('.')
    if len(sentence) > limit:
        sentence = sentence[:limit].rsplit(' ', 1)[0] + ' ...'
    return sentence


def _listing(keys):
    keys = sorted(keys)
    more = len(keys) - _MAX_LISTED
    return ', '.join(keys[:_MAX_LISTED]) + (f' ... ({more} more)' if more > 0 else '')


def _is_state_dict(obj):
    return isinstance(obj, dict) and bool(obj) and all(torch.is_tensor(v) for v in obj.values())


def load_weights(net, path, param_key='params', strict=True, which='t', option=None, fix=None, net_opt=None,
                 check_only=False):
    """Load checkpoint ``path`` into ``net`` and return ``net``.

    param_key: the entry holding the state dict ('params' / 'params_ema' fall back to each other, because basicsr's
    resume rewrites params_ema to params; None = the file is a raw state dict, which is also accepted when the key
    is absent). strict: any missing, unexpected or mis-shaped key is an error listing them; otherwise what fits is
    loaded. ``which`` ('g' or 't') names the options in the error messages (path.pretrain_network_<which>, ...);
    ``option`` replaces those names for a command-line tool (e.g. '--ckpt'); ``fix`` replaces the advice given for a
    missing or damaged file. ``net_opt`` (the network's options) lets a shape mismatch name the argument to change.
    ``check_only``: raise what loading would raise, load nothing (``net`` may live on the meta device)."""
    path_opt, key_opt, strict_opt = f'path.pretrain_network_{which}', f'path.param_key_{which}', \
        f'path.strict_load_{which}'
    if option is not None:
        path_opt, key_opt, strict_opt = option, f'{option} param key', f'{option} strict'
    role = {'t': 'teacher', 'g': 'network_g'}.get(which, f'network_{which}')
    if path is None:
        raise ValueError(f'{path_opt} is required when network_{which} is set (a checkpoint of the trained '
                         'network, e.g. basicsr net_g_<iter>.pth or an official NAFNet/Restormer file)')
    ckpt = read_checkpoint(path, path_opt, f'{role} checkpoint', fix=fix)
    logger = _logger()
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
            hint = (' It is a training state (training_states/<iter>.state), not weights: use models/net_g_<iter>.pth '
                    'of the same iteration.' if {'optimizers', 'iter'} <= set(available) else '')
            raise KeyError(f'{key_opt}: key {param_key!r} not in {role} checkpoint {path!r}; available keys: '
                           f'{_listing(map(str, available))} (use {key_opt}: ~ for a raw state dict).{hint}')
    if param_key is not None:
        ckpt = ckpt[param_key]
    if not _is_state_dict(ckpt):
        held = f'a dict with keys {_listing(map(str, ckpt))}' if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f'{path_opt}: {path!r} [{param_key}] is not a state dict of tensors (it holds {held}); '
                         f'set {key_opt} to the entry that holds the weights')
    state = {(k[7:] if k.startswith('module.') else k): v for k, v in ckpt.items()}
    own = net.state_dict()
    missing, unexpected = set(own) - set(state), set(state) - set(own)
    mismatched = [k for k in sorted(set(own) & set(state)) if own[k].shape != state[k].shape]
    loaded = len(own) - len(missing) - len(mismatched)
    if missing or unexpected or mismatched:
        network = f'network_{which}'
        shapes = '; '.join(f'{k}: checkpoint {tuple(state[k].shape)} vs net {tuple(own[k].shape)}'
                           for k in mismatched[:_MAX_LISTED])
        fitting = fitting_argument(net_opt, state) if net_opt else None
        fix = (f'set {network}.{fitting[0]}: {fitting[1]} (the checkpoint fits it exactly; it is {fitting[2]!r} '
               'now)' if fitting else f'check the {network} arguments (e.g. width/blocks/preset) against the '
               'options the checkpoint was trained with')
        details = (f'Missing keys: [{_listing(missing)}]; unexpected keys: [{_listing(unexpected)}]; '
                   f'shape mismatches: [{shapes}].')
        if strict:
            raise ValueError(f'The {role} checkpoint {path!r} ({key_opt}={param_key!r}) does not match {network} '
                             f'{type(net).__name__}: {fix}. {details}')
        share = MIN_LOADED_SHARE.get(which, MIN_LOADED_SHARE['g'])
        if loaded < share * len(own) or loaded < share * len(state):
            raise ValueError(
                f'{strict_opt}: false would load only {loaded} of the {len(own)} entries of {network} '
                f'{type(net).__name__} from the {len(state)} tensors of {path!r} (at least {share:.0%} of both must '
                f'load): the rest would keep its random initialisation{" in a frozen teacher" if which == "t" else ""}'
                f'. The checkpoint was made for another configuration: {fix}. {details}')
        if check_only:
            return net
        for key in mismatched:
            state.pop(key)
        logger.warning(f'{role} loaded non-strictly from {path}: {loaded} of {len(own)} entries loaded; '
                       f'{len(missing)} missing, {len(unexpected)} unexpected, {len(mismatched)} size-mismatched '
                       'keys skipped')
    if check_only:
        return net
    net.load_state_dict(state, strict=strict)
    logger.info(f'Loaded {role} {type(net).__name__} from {path} [{param_key}]')
    return net


def fitting_argument(net_opt, state, max_candidates=12):
    """(argument, value, current value) when the arch of ``net_opt`` built with that one integer argument changed
    has exactly the keys and shapes of ``state``, else None. Candidates, most frequent first: the argument scaled
    by the size ratios of the mismatched tensors (a width), and the lengths of the checkpoint's numbered module
    lists (a number of blocks). Networks are built on the meta device (no memory, no initialisation cost)."""
    from collections import Counter
    from fractions import Fraction
    from basicsr.utils.registry import ARCH_REGISTRY
    try:
        arch = ARCH_REGISTRY.get(net_opt['type'])
        params = inspect.signature(arch).parameters
    except Exception:  # an unknown or uninspectable arch: no suggestion
        return None
    kwargs = {k: v for k, v in net_opt.items() if k != 'type'}
    current = {name: kwargs.get(name, p.default) for name, p in params.items()}
    int_args = [n for n, v in current.items() if isinstance(v, int) and not isinstance(v, bool) and v > 0]

    def shapes(**changed):
        try:
            with torch.device('meta'):
                built = arch(**dict(kwargs, **changed))
        except Exception:
            return None
        return {k: tuple(v.shape) for k, v in built.state_dict().items()}

    own = shapes()
    if own is None:
        return None
    wanted = {k: tuple(v.shape) for k, v in state.items()}
    ratios = Counter(Fraction(w, o) for k in set(own) & set(wanted) if len(own[k]) == len(wanted[k])
                     for o, w in zip(own[k], wanted[k]) if o != w and o > 0)
    blocks = {}  # numbered module lists of the checkpoint: prefix -> its length
    for key in wanted:
        parts = key.split('.')
        for i, part in enumerate(parts):
            if part.isdigit():
                prefix = '.'.join(parts[:i])
                blocks[prefix] = max(blocks.get(prefix, 0), int(part) + 1)
    counts = Counter(blocks.values())
    for name in int_args:
        scaled = [current[name] * r for r, _ in ratios.most_common()]
        tried = [int(v) for v in scaled if v.denominator == 1] + [n for n, _ in counts.most_common()]
        for value in list(dict.fromkeys(v for v in tried if v != current[name]))[:max_candidates]:
            if shapes(**{name: value}) == wanted:
                return name, value, current[name]
    return None
