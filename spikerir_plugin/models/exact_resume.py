"""Exact resume for the plugin's models: a resumed run continues with the batch, the random streams and the
training state where the saved run stopped, as if it had never been interrupted.

basicsr 1.4.2 saves only the epoch and the iteration, so a resumed run restarts the saved epoch from its first batch
with fresh random streams. For runs whose model is a ``SpikingSRModel`` (or a subclass), basicsr's train pipeline
calls the two class hooks below (through ``spikerir_compat``'s launch fixes, which delegate to a model class that
defines them); every other model keeps basicsr's own resume:

- ``load_resume_state(opt)``: finds the state (``--auto_resume``: the newest in the experiment's own
  ``training_states`` folder), loads it on the CPU, keeps frozen networks (a teacher) out of basicsr's
  ``check_resume`` rewrite, and remembers it for the loader hook;
- ``resume_train_loader(train_loader, train_sampler, logger)``: derives the epoch and the batches of that epoch
  already consumed from the iteration, and makes this run's sampler skip them (only this sampler object changes
  class; basicsr's ``EnlargedSampler`` itself is untouched).

The model's ``save_training_state`` adds the Python/numpy/torch random states (``capture_rng_state``) and its extra
state, and writes atomically; ``resume_training`` restores them.
"""
import os
import random

import numpy as np
import torch
from basicsr.data.data_sampler import EnlargedSampler
from basicsr.utils import check_resume

from spikerir_plugin.utils.checkpoint import read_checkpoint

# A state travels from load_resume_state to resume_train_loader, which run at different points of one start of
# basicsr's train_pipeline. Only ever set during that start.
_pending = None


def capture_rng_state():
    """Python, numpy and torch random states in a form torch.load(weights_only=True) accepts."""
    np_state = np.random.get_state()
    state = {'python': random.getstate(),
             'numpy': (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
             'torch': torch.get_rng_state()}
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


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


def load_resume_state(opt, frozen_networks=()):
    """The plugin models' replacement of basicsr.train.load_resume_state (see the module docstring).

    frozen_networks: ``network_*`` keys the run never saves (a frozen teacher); resume keeps loading them from their
    own checkpoint with their own param key."""
    global _pending
    _pending = None
    path_opt = opt['path']
    state_path = None
    if opt.get('auto_resume'):
        iters = state_iterations(path_opt.get('training_states'))
        if iters:
            state_path = os.path.join(path_opt['training_states'], f'{iters[0]}.state')
            path_opt['resume_state'] = state_path
    elif path_opt.get('resume_state'):
        state_path = path_opt['resume_state']
    if state_path is None:
        return None
    # On the CPU even with CUDA: random states must stay CPU tensors (torch.set_rng_state and numpy reject CUDA
    # ones), and Optimizer.load_state_dict moves its state onto the parameters' device itself.
    state = read_checkpoint(state_path, key='path.resume_state', kind='training state')
    ignored = list(path_opt.get('ignore_resume_networks') or [])
    ignored += [name for name in frozen_networks if name in opt and name not in ignored]
    path_opt['ignore_resume_networks'] = ignored
    # check_resume turns every param_key_* equal to params_ema into params; an ignored network keeps its own
    kept = {key: path_opt[key] for key in (f'param_key_{n[len("network_"):]}' for n in ignored)
            if path_opt.get(key) is not None}
    check_resume(opt, state['iter'])
    path_opt.update(kept)
    if opt.get('rank', 0) != 0:  # ranks > 0 keep their own seeded streams; the file holds rank 0's
        state.pop('rng', None)
    _pending = state
    return state


class ResumableEnlargedSampler(EnlargedSampler):
    """basicsr's EnlargedSampler that, once, skips the batches of the resumed epoch consumed before the save.

    basicsr makes a first loader iterator before its epoch loop (the prefetcher) and throws it away at the first
    prefetcher.reset(); with workers that iterator already draws indices, so the skip is armed by ``set_epoch``,
    which comes right before the iterator that is really used."""

    def set_epoch(self, epoch):
        super().set_epoch(epoch)
        pending = self.__dict__.get('_resume_pending')
        if pending is not None and pending[0] == epoch:
            del self._resume_pending
            self._resume_skip, self._resume_rng = pending[1], pending[2]

    def __iter__(self):
        indices = list(super().__iter__())
        skip = self.__dict__.pop('_resume_skip', 0)
        rng = self.__dict__.pop('_resume_rng', None)
        if rng is not None:  # the random streams continue where the saved run stood: after its iterator was made
            restore_rng_state(rng)
        return iter(indices[skip:])


def resume_train_loader(train_loader, train_sampler, logger):
    """Continue the saved epoch at the first batch the saved run had not consumed (see the module docstring)."""
    state = _pending
    if state is None or train_loader is None or len(train_loader) == 0:
        return
    epoch, consumed = divmod(state['iter'], len(train_loader))
    state['epoch'] = epoch
    if consumed:
        if type(train_sampler) is EnlargedSampler:
            train_sampler.__class__ = ResumableEnlargedSampler
        if isinstance(train_sampler, ResumableEnlargedSampler):
            train_sampler._resume_pending = (epoch, consumed * train_loader.batch_size, state.pop('rng', None))
        else:
            logger.warning(f'Resume at iter {state["iter"]}: the train sampler {type(train_sampler).__name__} '
                           'cannot skip batches; the epoch restarts from its first batch')
            return
    logger.info(f'Resume at iter {state["iter"]}: epoch {epoch}, skipping {consumed} consumed batches.')
