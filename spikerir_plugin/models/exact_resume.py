"""Exact resume for the plugin's models: a resumed run continues with the batch, the random streams and the
training state where the saved run stopped, as if it had never been interrupted. With DataLoader workers
(num_worker_per_gpu > 0) the sample order and the main process's streams continue, but the workers start fresh,
so random crops, flips and noise drawn inside them differ after a resume (basicsr seeds its workers per run); so do
they with ``prefetch_mode: cpu``, whose thread draws them ahead of the training.

basicsr 1.4.2 saves only the epoch and the iteration, so a resumed run restarts the saved epoch from its first batch
with fresh random streams. For runs whose model is a ``SpikingSRModel`` (or a subclass), basicsr's train pipeline
calls the two class hooks below (through the launch fixes of ``spikerir_plugin/launch.py``, which delegate to a model class that
defines them); every other model keeps basicsr's own resume:

- ``prepare_resume(opt)``: finds the state, loads it on the CPU, keeps frozen networks (a teacher) out of
  basicsr's ``check_resume`` rewrite, and leaves it for the loader hook in the options both hooks receive
  (``opt[HANDOFF_KEY]``, a ``ResumeHandoff``). It never loses or hides work:
  ``--auto_resume`` takes the newest state that loads together with its ``net_<x>_<iter>.pth`` weights, skipping
  damaged pairs with a warning naming them (and refusing to start at iteration 0 when every state is damaged);
  when the experiment folder holds no state but an ``<name>_archived_<time>`` sibling does (basicsr moves the
  folder aside when a run starts under the same name without ``--auto_resume``), it stops and says how to move
  that run back instead of starting at iteration 0; when the newest state is behind an archived sibling's newest
  one (a rerun was stopped before it caught up), it stops, names both runs and says how to bring the archived one
  back or continue the newer one; a fresh start that is about to move a run aside says so loudly; an explicit
  ``path.resume_state`` and its weights are read before the experiment starts. Partial files of writes that were
  cut off are removed;
- ``resume_train_loader(opt, train_loader, train_sampler, logger)``: derives the epoch and the batches of that
  epoch already consumed from the iteration, and returns the loader rebuilt around a sampler that skips them
  (``ResumingSampler``, wrapping basicsr's; basicsr's ``EnlargedSampler`` itself is untouched). It takes the
  handoff out of the options again, before basicsr builds the model from them.

The model's ``save_training_state`` adds the Python/numpy/torch random states (``capture_rng_state``) of every rank
(``rng_ranks``, gathered by ``save``; ``rng`` is rank 0's) and its extra state, and writes atomically; on resume each
rank continues its own streams when the run has as many processes as the saved one (otherwise only rank 0's
continue, with a notice), restored by ``resume_training`` or by the sampler below.
"""
import contextlib
import glob
import os
import random
import shlex
import time

import numpy as np
import torch
from basicsr.data.data_sampler import EnlargedSampler
from basicsr.utils import check_resume

from spikerir_plugin.utils import console
from spikerir_plugin.utils.atomic import stale_temp_files
from spikerir_plugin.utils.checkpoint import CheckpointError, read_checkpoint

# The one object both hooks receive is the options dict of the pipeline start, so the handoff travels in it.
HANDOFF_KEY = '_exact_resume'


class ResumeHandoff:
    """What prepare_resume leaves for resume_train_loader within one start of basicsr's train_pipeline: the state
    the run resumes from (None for a fresh start) and the warnings to write to the run's log once it exists."""

    def __init__(self, state=None):
        self.state = state
        self.notices = []

    def __repr__(self):  # basicsr logs the options (this entry included) between the two hooks
        where = f'iteration {self.state["iter"]}' if self.state else 'a fresh start'
        return f'resume handoff for {where}'


def _handoff(opt):
    """The handoff of this start, made by the first call (prepare_resume clears any older one first)."""
    handoff = opt.get(HANDOFF_KEY)
    if not isinstance(handoff, ResumeHandoff):
        handoff = opt[HANDOFF_KEY] = ResumeHandoff()
    return handoff


def capture_rng_state():
    """Python, numpy and torch random states in a form torch.load(weights_only=True) accepts."""
    np_state = np.random.get_state()
    state = {'python': random.getstate(),
             'numpy': (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
             'torch': torch.get_rng_state()}
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def gather_rng_states():
    """[capture_rng_state() of every rank], in rank order; one entry without a process group. Under DDP this is
    a collective: every rank calls it (the model's ``save`` does, before rank 0 writes the training state)."""
    state = capture_rng_state()
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [state]
    states = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(states, state)
    return states


def restore_rng_state(state):
    random.setstate(state['python'])
    name, keys, *rest = state['numpy']
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def state_iterations(state_dir):
    """Iterations of the ``<iter>.state`` files in ``state_dir``, newest first."""
    if not state_dir or not os.path.isdir(state_dir):
        return []
    names = (f[:-len('.state')] for f in os.listdir(state_dir) if f.endswith('.state'))
    return sorted((int(n) for n in names if n.isdigit()), reverse=True)


class ResumeError(RuntimeError):
    """A resume that would lose or hide work (e.g. start at iteration 0 next to an archived run)."""


def _notice(opt, message):
    """A warning of this start: printed at once (basicsr's logger does not exist yet when the resume hook runs)
    and written to the run's log by resume_train_loader."""
    if opt.get('rank', 0) == 0:
        console.warn(f'WARNING (spikerir-plugin): {message}')
        _handoff(opt).notices.append(message)


def saved_networks(opt, frozen_networks=()):
    """Suffixes x of the ``network_x`` a run saves as net_x_<iter>.pth and resume loads back (not the ignored or
    frozen ones)."""
    ignored = set(opt['path'].get('ignore_resume_networks') or []) | set(frozen_networks)
    return [k[len('network_'):] for k in opt if k.startswith('network_') and k not in ignored]


def read_state(path, key='path.resume_state', fix=None):
    """A training state read through the checkpoint reader; anything without an iteration is refused."""
    state = read_checkpoint(path, key, 'training state', fix=fix)
    if not (isinstance(state, dict) and isinstance(state.get('iter'), int)):
        keys = ', '.join(map(str, state)) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f'{key}: {str(path)!r} is not a training state (it holds {keys}): point {key} at a '
                              'training_states/<iter>.state file', 'not a training state', path)
    return state


def _read_weights(opt, networks, iteration, key_note, fix):
    for name in networks:
        path = os.path.join(opt['path']['models'], f'net_{name}_{iteration}.pth')
        read_checkpoint(path, f'path.pretrain_network_{name} ({key_note})', 'weights saved with that training state',
                        fix=fix)


def _why(error):
    return getattr(error, 'reason', None) or str(error)


def newest_loadable_state(opt, networks):
    """(path, state) of the newest ``<iter>.state`` that loads together with its net_<x>_<iter>.pth files, or
    (None, None) when the folder holds no state. Damaged pairs are skipped with a warning naming them and left
    as they are; if every state is damaged, the error lists them (a fresh start would hide the run)."""
    state_dir = opt['path'].get('training_states')
    skipped = []
    for iteration in state_iterations(state_dir):
        path = os.path.join(state_dir, f'{iteration}.state')
        try:
            state = read_state(path, 'path.resume_state (--auto_resume)')
            _read_weights(opt, networks, state['iter'], '--auto_resume', None)
        except (CheckpointError, FileNotFoundError) as error:
            skipped.append(f'{getattr(error, "checkpoint_path", None) or path} ({_why(error)})')
            continue
        if skipped:
            _notice(opt, f'--auto_resume skipped damaged checkpoints in {os.path.dirname(state_dir)}: '
                         f'{"; ".join(skipped)}. Resuming from {path} (iteration {state["iter"]}); the skipped '
                         'files are left as they are and are replaced when the run saves those iterations again.')
        return path, state
    if skipped:
        raise CheckpointError(
            f'--auto_resume: no training state in {state_dir} can be loaded: {"; ".join(skipped)}. Nothing was '
            'changed. Restore them from a copy, or move the damaged training_states/<iter>.state and '
            'models/net_g_<iter>.pth files away to start from iteration 0.', 'no loadable training state')
    return None, None


def archived_runs(opt):
    """[(folder, newest iteration)] of ``<experiments_root>_archived_*`` siblings holding training states, newest
    folder first (basicsr renames an experiment folder that way when a run starts under its name without
    --auto_resume)."""
    root = opt['path'].get('experiments_root')
    if not root:
        return []
    runs = []
    for folder in sorted(glob.glob(glob.escape(root) + '_archived_*'), reverse=True):
        iters = state_iterations(os.path.join(folder, 'training_states'))
        if iters:
            runs.append((folder, iters[0]))
    return runs


def refuse_silent_restart(opt):
    """--auto_resume found nothing to resume: if an archived sibling holds the run, say so instead of starting at
    iteration 0 (which would also move the current folder aside, burying the run one level deeper)."""
    runs = archived_runs(opt)
    if not runs:
        return
    root = opt['path']['experiments_root']
    folder, iteration = runs[0]
    q = shlex.quote
    move = (f'mv {q(root)} {q(_unused_name(root + "_empty"))} && mv {q(folder)} {q(root)}' if os.path.exists(root) else
            f'mv {q(folder)} {q(root)}')
    others = f' (other archived runs: {", ".join(f for f, _ in runs[1:])})' if len(runs) > 1 else ''
    raise ResumeError(
        f'--auto_resume found no training state in {root}, but {folder} holds this experiment\'s run up to '
        f'iteration {iteration}{others}: basicsr moved it there when a run under the same name started without '
        f'--auto_resume. To continue that run: {move}, then run again with --auto_resume. To start from '
        'iteration 0 instead, run without --auto_resume.')


def _unused_name(path):
    """``path``, or ``path_2``, ``path_3``, ... : the first that does not exist (``mv`` into an existing folder
    would move a run inside it)."""
    return next(p for p in (path, *(f'{path}_{i}' for i in range(2, 10000))) if not os.path.exists(p))


def refuse_shorter_than_archived(opt, state_path, iteration):
    """--auto_resume found a state at ``iteration``, but an archived sibling run went further (a rerun without
    --auto_resume moved it aside and was stopped before it caught up): refuse, naming both runs and both ways out,
    instead of silently continuing the shorter run."""
    longer = [(folder, it) for folder, it in archived_runs(opt) if it > iteration]
    if not longer:
        return
    root = opt['path']['experiments_root']
    folder, archived_iter = max(longer, key=lambda run: run[1])  # the furthest (the newest folder on a tie)
    q = shlex.quote
    stamp = folder[len(root + '_archived_'):]
    # the current run is kept as an archived run (basicsr's stamp), under a name no folder has: mv would move the
    # run into an existing folder
    kept = _unused_name(f'{root}_archived_{time.strftime("%Y%m%d_%H%M%S")}')
    swap = f'mv {q(root)} {q(kept)} && mv {q(folder)} {q(root)}'
    others = [f for f, _ in longer if f != folder]
    others = f' (other archived runs past iteration {iteration}: {", ".join(others)})' if others else ''
    raise ResumeError(
        f'--auto_resume would continue {root} from iteration {iteration} ({state_path}), but {folder} holds a '
        f'longer run of this experiment, up to iteration {archived_iter}{others}: basicsr moved it there when a run '
        'under the same name started without --auto_resume. Nothing was changed. To continue the archived run: '
        f'{swap}, then run again with --auto_resume (the run now in {root} is kept as an archived run). To continue '
        f'the run in {root} from iteration {iteration} instead: run again without --auto_resume and with '
        f'path.resume_state: {state_path} (in the options file, or --force_yml {q(f"path:resume_state={state_path}")}'
        f' on the command line), or move the archived run out of the way: '
        f'mv {q(folder)} {q(_unused_name(f"{root}_set_aside_{stamp}"))}, then run again with --auto_resume.')


def warn_before_archiving(opt):
    """A fresh start (no --auto_resume, no path.resume_state) in a folder that holds a run: basicsr is about to move
    it to <name>_archived_<time>; make that loud and say how to continue it instead."""
    root = opt['path'].get('experiments_root')
    iters = state_iterations(opt['path'].get('training_states'))
    if not root or not iters or not opt.get('is_train', True):
        return
    finished = os.path.isfile(os.path.join(opt['path']['models'], 'net_g_latest.pth'))
    _notice(opt, f'{root} holds a {"finished " if finished else ""}training run (training states up to iteration '
                 f'{iters[0]}). This run was started without --auto_resume, so basicsr moves that folder to '
                 f'{root}_archived_<time> and starts from iteration 0. To continue the earlier run instead: stop '
                 f'this one and run again with --auto_resume: until this run reaches iteration {iters[0]}, '
                 '--auto_resume stops and prints the commands that move the archived run back.')


def _remove_stale_temp_files(opt):
    """Partial files of writes killed before their rename (never a complete checkpoint)."""
    if opt.get('rank', 0) != 0:
        return
    stale = [p for key in ('models', 'training_states') for p in stale_temp_files(opt['path'].get(key))]
    for path in stale:
        with contextlib.suppress(OSError):
            os.remove(path)
    if stale:
        _notice(opt, f'removed {len(stale)} partial file(s) left by writes that were cut off: '
                     f'{", ".join(os.path.basename(p) for p in stale)}')


def _this_ranks_rng(opt, state, path):
    """Leave in state['rng'] the random streams this rank continues with: its own entry of ``rng_ranks`` when the
    state was saved by as many processes as this run has; otherwise rank 0 takes ``rng`` (the saved rank 0's) and
    the other ranks keep the streams basicsr seeded (manual_seed + rank), with a notice."""
    rank, world = opt.get('rank', 0), opt.get('world_size', 1)
    ranks = state.pop('rng_ranks', None)
    if isinstance(ranks, (list, tuple)) and len(ranks) == world:
        state['rng'] = ranks[rank]
        return
    saved_rng = state.get('rng') is not None
    if rank != 0:
        state.pop('rng', None)
    saved = len(ranks) if isinstance(ranks, (list, tuple)) else None
    if not saved_rng or (saved is None and world == 1):  # no streams, or an earlier version's single-rank state
        return
    others = 'the other ranks start again from their seeds (manual_seed + rank)'
    if saved is None:
        _notice(opt, f"{path} holds only rank 0's random streams (written by an earlier plugin version): rank 0 "
                     f'continues them, {others}, so the continuation is exact only for rank 0\'s stream.')
    else:
        _notice(opt, f'{path} was saved by {saved} process(es) and this run has {world}: the batches each rank '
                     'draws change with the number of processes, so the continuation is not exact; rank 0 continues '
                     f"the saved rank 0's random streams{', ' + others if world > 1 else ''}.")


def prepare_resume(opt, frozen_networks=()):
    """The plugin models' replacement of basicsr.train.load_resume_state (see the module docstring).

    frozen_networks: ``network_*`` keys the run never saves (a frozen teacher); resume keeps loading them from their
    own checkpoint with their own param key. --auto_resume takes the newest state that loads with its weights
    (``newest_loadable_state``) and refuses to start at iteration 0 next to an archived run
    (``refuse_silent_restart``); an explicit path.resume_state and its weights are read before anything starts."""
    opt.pop(HANDOFF_KEY, None)  # a handoff of an earlier start of these options is never used again
    path_opt = opt['path']
    networks = saved_networks(opt, frozen_networks)
    explicit = not opt.get('auto_resume') and path_opt.get('resume_state')
    if opt.get('auto_resume'):
        state_path, state = newest_loadable_state(opt, networks)
        if state_path is None:
            refuse_silent_restart(opt)
            return None
        refuse_shorter_than_archived(opt, state_path, state['iter'])
        path_opt['resume_state'] = state_path
    elif explicit:
        state_path = path_opt['resume_state']
        fix = ('Point path.resume_state at an earlier state, or remove it and run with --auto_resume, which skips '
               'damaged states.')
        # On the CPU even with CUDA: random states must stay CPU tensors (torch.set_rng_state and numpy reject CUDA
        # ones), and Optimizer.load_state_dict moves its state onto the parameters' device itself.
        state = read_state(state_path, 'path.resume_state', fix)
    else:
        warn_before_archiving(opt)
        return None
    ignored = list(path_opt.get('ignore_resume_networks') or [])
    ignored += [name for name in frozen_networks if name in opt and name not in ignored]
    path_opt['ignore_resume_networks'] = ignored
    # check_resume turns every param_key_* equal to params_ema into params; an ignored network keeps its own
    kept = {key: path_opt[key] for key in (f'param_key_{n[len("network_"):]}' for n in ignored)
            if path_opt.get(key) is not None}
    check_resume(opt, state['iter'])
    path_opt.update(kept)
    if explicit:
        _read_weights(opt, networks, state['iter'], 'set from path.resume_state',
                      f'path.resume_state resumes into {path_opt["models"]}: the weights of iteration {state["iter"]} '
                      'must be there, loadable (net_<x>_<iter>.pth). Point path.resume_state at an earlier state, or '
                      'use --auto_resume, which skips damaged pairs.')
    _remove_stale_temp_files(opt)
    _this_ranks_rng(opt, state, path_opt['resume_state'])
    _handoff(opt).state = state
    return state


class ResumingSampler:
    """Wraps a train sampler (basicsr's EnlargedSampler) and, once, skips the batches of the resumed epoch that the
    saved run had consumed; everything else is the wrapped sampler's (its indices, length and epoch seed).

    basicsr makes a first loader iterator before its epoch loop (the prefetcher) and throws it away at the first
    prefetcher.reset(); with workers that iterator already draws indices, so the skip is armed by ``set_epoch``,
    which comes right before the iterator that is really used.

    The random streams are restored where the saved run stood relative to its loader iterator (making one draws
    torch's base seed): mid-epoch, the saved run's iterator existed before the save, so they are restored when the
    resumed epoch's iterator starts; at an epoch boundary the saved run made its next iterator after the save, so
    they are restored in ``set_epoch``, before that iterator is made."""

    def __init__(self, sampler, epoch, skip, rng):
        self.sampler = sampler
        self._pending = (epoch, skip, rng)  # until set_epoch(epoch)
        self._skip, self._rng = 0, None

    def set_epoch(self, epoch):
        self.sampler.set_epoch(epoch)
        if self._pending is not None and self._pending[0] == epoch:
            _, skip, rng = self._pending
            self._pending = None
            if skip == 0 and rng is not None:
                restore_rng_state(rng)
            else:
                self._skip, self._rng = skip, rng

    def __iter__(self):
        indices = list(iter(self.sampler))
        skip, rng = self._skip, self._rng
        self._skip, self._rng = 0, None
        if rng is not None:  # the random streams continue where the saved run stood: after its iterator was made
            restore_rng_state(rng)
        return iter(indices[skip:])

    def __len__(self):
        return len(self.sampler)


def resume_train_loader(opt, train_loader, train_sampler, logger):
    """Continue the saved epoch at the first batch the saved run had not consumed (see the module docstring).
    Returns the (loader, sampler) the run goes on with: basicsr's own when nothing is skipped, else the same loader
    rebuilt by basicsr's build_dataloader around a ``ResumingSampler``."""
    handoff = opt.pop(HANDOFF_KEY, None) or ResumeHandoff()
    for message in handoff.notices:  # the warnings of prepare_resume, now that the run's log exists
        logger.warning(message)
    state = handoff.state
    if state is None or train_loader is None or len(train_loader) == 0:
        return train_loader, train_sampler
    epoch, consumed = divmod(state['iter'], len(train_loader))
    state['epoch'] = epoch
    if not isinstance(train_sampler, EnlargedSampler):
        if consumed:  # (at an epoch boundary the model's resume_training restores the random streams)
            logger.warning(f'Resume at iter {state["iter"]}: the train sampler {type(train_sampler).__name__} '
                           'cannot skip batches; the epoch restarts from its first batch')
        return train_loader, train_sampler
    from basicsr.data import build_dataloader
    sampler = ResumingSampler(train_sampler, epoch, consumed * train_loader.batch_size, state.pop('rng', None))
    dataset_opt = opt['datasets']['train']
    if dataset_opt.get('prefetch_mode') == 'cpu':
        # basicsr's PrefetchDataLoader iterates in a thread of its own, so the first (discarded) iterator could
        # take the skip meant for the resumed epoch; the resumed run's loader is plain (CPUPrefetcher still serves
        # it), which keeps the skip on the iterator the epoch really uses
        dataset_opt = dict(dataset_opt, prefetch_mode=None)
        logger.warning('Resume with prefetch_mode: cpu: the resumed epoch skips the consumed batches and the loader '
                       'runs without its prefetch thread for this run, but the saved random streams were drawn ahead '
                       'by that thread, so random crops and flips differ from an uninterrupted run (prefetch_mode: ~ '
                       'resumes exactly)')
    loader = build_dataloader(train_loader.dataset, dataset_opt, num_gpu=opt['num_gpu'], dist=opt['dist'],
                              sampler=sampler, seed=opt['manual_seed'])
    logger.info(f'Resume at iter {state["iter"]}: epoch {epoch}, skipping {consumed} consumed batches.')
    return loader, sampler
