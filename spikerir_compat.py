"""The plugin's one compatibility module: basicsr 1.4.2 on torch 2.14 / torchvision 0.29 / numpy 2 / Python 3.11+.

It is a top-level, stdlib-only module so that the startup hook (``spikerir-autoload.pth``) can import it at
interpreter start for free: nothing heavy is imported until basicsr itself is.

Two layers:
- import-time shims (``install_import_shims``): module aliases that must exist *before* ``import basicsr``;
- runtime patches (``patch_runtime``): replacements of basicsr functions that break on CPU or current torch,
  applied once basicsr is importable.
"""
import importlib
import importlib.machinery
import os
import sys

AUTOLOAD_OPT_OUT_ENV = 'SPIKERIR_NO_AUTOLOAD'

# Modules basicsr imports under names that no longer exist.  Values: the module that now holds the same API.
# torchvision>=0.17 made functional_tensor private; SciPy 2 removes ndimage.filters (basicsr/metrics/niqe.py).
_MODULE_ALIASES = {
    'torchvision.transforms.functional_tensor': 'torchvision.transforms._functional_tensor',
    'scipy.ndimage.filters': 'scipy.ndimage',
}


class _LooseVersion:
    """Minimal stand-in for distutils.version.LooseVersion (Python 3.12 without setuptools).

    basicsr only compares torchvision's version with it (archs/arch_util.py, DCNv2Pack)."""

    def __init__(self, vstring):
        self.vstring = str(vstring)
        parts = []
        for token in self.vstring.replace('-', '.').replace('+', '.').split('.'):
            parts.append((0, int(token), '') if token.isdigit() else (1, 0, token))
        self.version = parts

    def _cmp_key(self, other):
        return self.version, (other if isinstance(other, _LooseVersion) else _LooseVersion(other)).version

    def __lt__(self, other):
        a, b = self._cmp_key(other)
        return a < b

    def __le__(self, other):
        a, b = self._cmp_key(other)
        return a <= b

    def __gt__(self, other):
        a, b = self._cmp_key(other)
        return a > b

    def __ge__(self, other):
        a, b = self._cmp_key(other)
        return a >= b

    def __eq__(self, other):
        a, b = self._cmp_key(other)
        return a == b

    def __repr__(self):
        return f"LooseVersion('{self.vstring}')"


class _AliasFinder:
    """Serves the aliased module names.  It sits at the *end* of sys.meta_path, so a real module of that name
    (old torchvision, SciPy 1.x, stdlib/setuptools distutils) always wins; it is only consulted as a fallback."""

    def find_spec(self, name, path=None, target=None):
        if name in _MODULE_ALIASES or name in ('distutils', 'distutils.version'):
            return importlib.machinery.ModuleSpec(name, self, is_package=(name == 'distutils'))
        return None

    def create_module(self, spec):
        return None  # default module object

    def exec_module(self, module):
        name = module.__name__
        if name == 'distutils':
            module.__path__ = []
        elif name == 'distutils.version':
            module.LooseVersion = _LooseVersion
        else:
            real = importlib.import_module(_MODULE_ALIASES[name])
            module.__dict__.update({k: v for k, v in vars(real).items() if not k.startswith('__')})


class _ImportPluginAfterBasicsr:
    """Loader wrapper: runs basicsr's own loader, then imports the plugin so its names are registered."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        spec = module.__spec__
        spec.loader = module.__loader__ = self.loader  # leave no trace of the wrapper on basicsr
        self.loader.exec_module(module)
        try:
            importlib.import_module('spikerir_plugin')
        except Exception as exc:  # the hook must never break an unrelated program
            sys.stderr.write(f'spikerir-plugin: autoload failed ({type(exc).__name__}: {exc}); '
                             f'import spikerir_plugin yourself or set {AUTOLOAD_OPT_OUT_ENV}=1\n')


class _BasicsrWatcher:
    """One-shot meta-path finder: the first time ``basicsr`` is imported it wraps the real loader."""

    def find_spec(self, name, path=None, target=None):
        if name != 'basicsr':
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        for finder in sys.meta_path:
            find_spec = getattr(finder, 'find_spec', None)
            spec = find_spec(name, path, target) if find_spec else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, 'exec_module'):
                    spec.loader = _ImportPluginAfterBasicsr(spec.loader)
                return spec
        return None


def install_import_shims():
    """Make ``import basicsr`` work on the current stack.  Idempotent; must run before basicsr is imported."""
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())


def install_startup_hook():
    """Called by ``spikerir-autoload.pth`` at interpreter start.  Never raises; costs two list appends."""
    try:
        if os.environ.get(AUTOLOAD_OPT_OUT_ENV, '') not in ('', '0'):
            return
        install_import_shims()
        if 'basicsr' not in sys.modules and not any(isinstance(f, _BasicsrWatcher) for f in sys.meta_path):
            sys.meta_path.insert(0, _BasicsrWatcher())
    except Exception:  # pragma: no cover - defensive, a .pth must not print tracebacks at every start
        pass


# ----------------------------------------------------------------------------------------------------------------
# Runtime patches (need torch and basicsr)
# ----------------------------------------------------------------------------------------------------------------

def _rewrite_local_rank_argv(argv):
    """torch>=2 launchers pass --local-rank=N; basicsr's argparse only knows --local_rank."""
    return ['--local_rank' + a[len('--local-rank'):] if a.startswith('--local-rank') else a for a in argv]


def torch_load(path, map_location='cpu'):
    """torch.load for basicsr-format files (.pth / .state), mapping to CPU when CUDA is absent.

    weights_only stays True (safe): basicsr files hold tensors, dicts and collections.Counter, which torch allows;
    the safe globals added in patch_runtime cover the numpy scalars / Namespaces some official checkpoints pickle."""
    import torch
    return torch.load(path, map_location=map_location, weights_only=True)


# A resume state travels from load_resume_state to the dataloader, sampler and model patches below, which run
# at different points of basicsr's train_pipeline.  Only ever set during one pipeline start.
_pending_resume = None


def load_resume_state(opt):
    """Replacement for basicsr.train.load_resume_state.

    Fixes: (1) auto-resume looked in <cwd>/experiments instead of the experiment's own training_states folder;
    (2) it called torch.cuda.current_device() even with num_gpu: 0; (3) it remembers the state so that the
    patches below can continue the data order and random streams exactly where the saved run stopped."""
    global _pending_resume
    resume_state_path = None
    if opt.get('auto_resume'):
        state_dir = opt['path'].get('training_states')
        if state_dir and os.path.isdir(state_dir):
            iters = [int(f[:-len('.state')]) for f in os.listdir(state_dir)
                     if f.endswith('.state') and f[:-len('.state')].isdigit()]
            if iters:
                resume_state_path = os.path.join(state_dir, f'{max(iters)}.state')
                opt['path']['resume_state'] = resume_state_path
    elif opt['path'].get('resume_state'):
        resume_state_path = opt['path']['resume_state']

    _pending_resume = None
    if resume_state_path is None:
        return None
    if not os.path.isfile(resume_state_path):
        raise FileNotFoundError(f'path.resume_state: no training state at {resume_state_path!r}')
    # On the CPU even with CUDA: the random states must stay CPU tensors (torch.set_rng_state and numpy reject
    # CUDA ones), and Optimizer.load_state_dict moves its state onto the parameters' device itself.
    resume_state = torch_load(resume_state_path, map_location='cpu')
    from basicsr.utils import check_resume
    # A frozen teacher (network_t) is never saved by the run: resume must keep loading it from its own checkpoint
    # with its own param key, so it joins ignore_resume_networks, and the param keys of ignored networks survive
    # check_resume (which rewrites every param_key_* equal to params_ema into params).
    ignored = list(opt['path'].get('ignore_resume_networks') or [])
    if 'network_t' in opt and 'network_t' not in ignored:
        ignored.append('network_t')
    opt['path']['ignore_resume_networks'] = ignored
    kept_keys = {key: opt['path'][key] for key in (f'param_key_{n[len("network_"):]}' for n in ignored)
                 if opt['path'].get(key) is not None}
    check_resume(opt, resume_state['iter'])
    opt['path'].update(kept_keys)
    if opt.get('rank', 0) != 0:  # ranks > 0 keep their own seeded streams; the file holds rank 0's
        resume_state.pop('rng', None)
    _pending_resume = resume_state
    return resume_state


def capture_rng_state():
    """Python, numpy and torch random states in a form torch.load(weights_only=True) accepts."""
    import random

    import numpy as np
    import torch
    np_state = np.random.get_state()
    state = {'python': random.getstate(),
             'numpy': (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
             'torch': torch.get_rng_state()}
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state):
    import random

    import numpy as np
    import torch
    random.setstate(state['python'])
    name, keys, *rest = state['numpy']
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def _wrap_create_train_val_dataloader(create):
    """basicsr restarts the saved epoch from its first batch on resume (its state only holds the epoch).  Derive
    the epoch and the batches already consumed from the iteration; the sampler skips those in the epoch's loader."""

    def create_train_val_dataloader(opt, logger):
        result = create(opt, logger)
        train_loader, train_sampler = result[0], result[1]
        state = _pending_resume
        if state is not None and train_loader is not None and len(train_loader) > 0:
            epoch, consumed = divmod(state['iter'], len(train_loader))
            state['epoch'] = epoch
            if consumed:
                # random streams continue where the saved run stood: after its loader iterator was made
                train_sampler._resume_pending = (epoch, consumed * train_loader.batch_size, state.pop('rng', None))
            logger.info(f'Resume at iter {state["iter"]}: epoch {epoch}, skipping {consumed} consumed batches.')
        return result

    return create_train_val_dataloader


def _sampler_set_epoch(self, epoch):
    """EnlargedSampler.set_epoch that arms a pending mid-epoch resume for the resumed epoch's loader only.

    basicsr makes a first loader iterator before its epoch loop (the prefetcher) and throws it away at the first
    prefetcher.reset(); with workers (or prefetch_mode cuda) that iterator already draws indices, so the skip
    must wait for set_epoch, which comes right before the iterator that is really used."""
    _original_sampler_set_epoch(self, epoch)
    pending = self.__dict__.get('_resume_pending')
    if pending is not None and pending[0] == epoch:
        del self._resume_pending
        self._resume_skip, self._resume_rng = pending[1], pending[2]


def _sampler_iter(self):
    """EnlargedSampler.__iter__ that honours an armed mid-epoch resume (skip + random state)."""
    indices = list(_original_sampler_iter(self))
    skip = self.__dict__.pop('_resume_skip', 0)
    rng = self.__dict__.pop('_resume_rng', None)
    if rng is not None:
        restore_rng_state(rng)
    return iter(indices[skip:])


def _save_training_state(self, epoch, current_iter):
    """BaseModel.save_training_state plus the random states, written atomically (a crash mid-write never leaves
    a truncated .state that auto-resume would pick)."""
    import torch
    if current_iter == -1:
        return
    state = {'epoch': epoch, 'iter': current_iter, 'rng': capture_rng_state(),
             'optimizers': [o.state_dict() for o in self.optimizers],
             'schedulers': [s.state_dict() for s in self.schedulers]}
    state.update(self.extra_training_state() if hasattr(self, 'extra_training_state') else {})
    save_path = os.path.join(self.opt['path']['training_states'], f'{current_iter}.state')
    torch.save(state, save_path + '.tmp')
    os.replace(save_path + '.tmp', save_path)


def _wrap_resume_training(resume):
    def resume_training(self, resume_state):
        resume(self, resume_state)
        if hasattr(self, 'load_extra_training_state'):
            self.load_extra_training_state(resume_state)
        if resume_state.get('rng') is not None:  # epoch-boundary resume: restore before the next loader
            restore_rng_state(resume_state['rng'])

    return resume_training


def _init_dist_pytorch(backend='nccl', **kwargs):
    """Replacement for basicsr.utils.dist_util._init_dist_pytorch: LOCAL_RANK picks the GPU; without CUDA the
    process group uses gloo (basicsr always asked for nccl and divided by the GPU count, 0 on CPU)."""
    import torch
    import torch.distributed as dist
    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        local_rank = int(os.environ.get('LOCAL_RANK', os.environ['RANK']))
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    else:
        backend = 'gloo'
    dist.init_process_group(backend=backend, **kwargs)


def _model_to_device(self, net):
    """Replacement for BaseModel.model_to_device: DDP without device_ids on CPU (gloo)."""
    import torch
    from torch.nn.parallel import DataParallel, DistributedDataParallel
    net = net.to(self.device)
    if self.opt['dist']:
        find_unused_parameters = self.opt.get('find_unused_parameters', False)
        device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
        net = DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=find_unused_parameters)
    elif self.opt['num_gpu'] > 1:
        net = DataParallel(net)
    return net


def _wrap_parse_options(parse_options):
    """`python basicsr/train.py` runs basicsr's train.py as __main__, whose train_pipeline looks up
    load_resume_state and create_train_val_dataloader in its own globals, not in basicsr.train.  Those are defined
    only after the plugin has been imported, so they are rebound here, when train_pipeline's first call (this
    one) runs."""

    def wrapped(*args, **kwargs):
        main = sys.modules.get('__main__')
        if getattr(main, 'load_resume_state', None) is not None and getattr(main, 'train_pipeline', None) \
                and getattr(main.load_resume_state, '__module__', None) == '__main__':
            _patch_train_pipeline_globals(main)
        return parse_options(*args, **kwargs)

    return wrapped


def _patch_train_pipeline_globals(module):
    """Rebind the resume helpers that basicsr's train_pipeline looks up in its own module's globals."""
    module.load_resume_state = load_resume_state
    module.create_train_val_dataloader = _wrap_create_train_val_dataloader(module.create_train_val_dataloader)


_runtime_patched = False
_original_sampler_iter = _original_sampler_set_epoch = None


def patch_runtime():
    """Apply the runtime patches once (idempotent).  Requires basicsr to be importable (shims installed)."""
    global _runtime_patched
    sys.argv[:] = _rewrite_local_rank_argv(sys.argv)
    if _runtime_patched:
        return
    import argparse

    import numpy as np
    import torch
    import basicsr.models.base_model as base_model
    import basicsr.train as bsr_train
    import basicsr.utils.dist_util as dist_util
    import basicsr.utils.options as bsr_options
    from basicsr.data.data_sampler import EnlargedSampler
    from basicsr.utils.dist_util import master_only

    safe = [argparse.Namespace, np.dtype, type(np.dtype(np.float64))]
    scalar = getattr(getattr(np, '_core', None), 'multiarray', None)
    if scalar is not None and hasattr(scalar, 'scalar'):
        safe.append(scalar.scalar)
    torch.serialization.add_safe_globals(safe)

    global _original_sampler_iter, _original_sampler_set_epoch
    _patch_train_pipeline_globals(bsr_train)
    bsr_options.parse_options = _wrap_parse_options(bsr_options.parse_options)
    _original_sampler_iter, _original_sampler_set_epoch = EnlargedSampler.__iter__, EnlargedSampler.set_epoch
    EnlargedSampler.__iter__, EnlargedSampler.set_epoch = _sampler_iter, _sampler_set_epoch
    dist_util._init_dist_pytorch = _init_dist_pytorch
    base_model.BaseModel.model_to_device = _model_to_device
    base_model.BaseModel.save_training_state = master_only(_save_training_state)
    base_model.BaseModel.resume_training = _wrap_resume_training(base_model.BaseModel.resume_training)
    _runtime_patched = True

