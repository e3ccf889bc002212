"""The plugin's one compatibility module: basicsr 1.4.2 on torch 2.14 / torchvision 0.29 / numpy 2 / Python 3.11+.

It is a top-level, stdlib-only module so that the startup hook (``spikerir-autoload.pth``) can import it at
interpreter start for free: nothing heavy is imported until basicsr itself is.

It holds only what makes basicsr import and launch on the current stack; everything the plugin adds lives in the
plugin's own classes. Two layers:
- import-time shims (``install_import_shims``): module aliases that must exist *before* ``import basicsr``;
- runtime fixes (``patch_runtime``), applied once basicsr is importable: ``--local-rank`` from torch>=2 launchers,
  the GPU picked from ``LOCAL_RANK``, gloo and no ``device_ids`` without CUDA, the numpy/argparse globals some
  official checkpoints pickle allowed for ``torch.load(weights_only=True)``, and resume states loaded on the CPU
  when there is no CUDA (basicsr always maps them to ``torch.cuda.current_device()``).

A model class may take over resume for its own runs by defining the class methods ``load_resume_state(opt)`` and
``resume_train_loader(train_loader, train_sampler, logger)``; the plugin's models do (exact resume). For every other
model, basicsr's resume runs unchanged apart from the CPU fix.
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
# Runtime fixes (need torch and basicsr)
# ----------------------------------------------------------------------------------------------------------------

def _rewrite_local_rank_argv(argv):
    """torch>=2 launchers pass --local-rank=N; basicsr's argparse only knows --local_rank."""
    return ['--local_rank' + a[len('--local-rank'):] if a.startswith('--local-rank') else a for a in argv]


def _model_class(opt):
    """The registered class of opt['model_type'], or None."""
    from basicsr.utils.registry import MODEL_REGISTRY
    name = opt.get('model_type')
    return MODEL_REGISTRY.get(name) if isinstance(name, str) and name in MODEL_REGISTRY else None


def load_resume_state(opt):
    """basicsr.train.load_resume_state, with the state mapped to the CPU when CUDA is absent (basicsr called
    torch.cuda.current_device() unconditionally); a model class defining ``load_resume_state`` takes over."""
    hook = getattr(_model_class(opt), 'load_resume_state', None)
    if hook is not None:
        return hook(opt)
    import torch
    from basicsr.utils import check_resume, scandir
    resume_state_path = None
    if opt['auto_resume']:
        state_path = os.path.join('experiments', opt['name'], 'training_states')
        if os.path.isdir(state_path):
            states = list(scandir(state_path, suffix='state', recursive=False, full_path=False))
            if len(states) != 0:
                states = [float(v.split('.state')[0]) for v in states]
                resume_state_path = os.path.join(state_path, f'{max(states):.0f}.state')
                opt['path']['resume_state'] = resume_state_path
    elif opt['path'].get('resume_state'):
        resume_state_path = opt['path']['resume_state']
    if resume_state_path is None:
        return None
    if torch.cuda.is_available():
        device_id = torch.cuda.current_device()
        resume_state = torch.load(resume_state_path, map_location=lambda storage, loc: storage.cuda(device_id))
    else:
        resume_state = torch.load(resume_state_path, map_location='cpu')
    check_resume(opt, resume_state['iter'])
    return resume_state


def _wrap_create_train_val_dataloader(create):
    """basicsr's create_train_val_dataloader; then a model class defining ``resume_train_loader`` sees the loader."""

    def create_train_val_dataloader(opt, logger):
        result = create(opt, logger)
        hook = getattr(_model_class(opt), 'resume_train_loader', None)
        if hook is not None:
            hook(result[0], result[1], logger)
        return result

    create_train_val_dataloader.__wrapped__ = create
    return create_train_val_dataloader


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
    one) runs.  For a test run, a model class defining ``test_launch_checks(opt)`` checks the options here, before
    basicsr's test pipeline creates (or moves aside) results/<name>."""

    def wrapped(*args, **kwargs):
        main = sys.modules.get('__main__')
        if getattr(main, 'load_resume_state', None) is not None and getattr(main, 'train_pipeline', None) \
                and getattr(main.load_resume_state, '__module__', None) == '__main__':
            _bind_resume_fixes(main)
        result = parse_options(*args, **kwargs)
        opt = result[0] if isinstance(result, tuple) else result
        if isinstance(opt, dict) and not opt.get('is_train'):
            hook = getattr(_model_class(opt), 'test_launch_checks', None)
            if hook is not None:
                hook(opt)
        return result

    wrapped.__wrapped__ = parse_options
    return wrapped


def _bind_resume_fixes(module):
    """Rebind the resume helpers that basicsr's train_pipeline looks up in its own module's globals."""
    module.load_resume_state = load_resume_state
    module.create_train_val_dataloader = _wrap_create_train_val_dataloader(module.create_train_val_dataloader)


_runtime_patched = False


def patch_runtime():
    """Apply the runtime fixes once (idempotent).  Requires basicsr to be importable (shims installed)."""
    global _runtime_patched
    sys.argv[:] = _rewrite_local_rank_argv(sys.argv)
    if _runtime_patched:
        return
    import argparse

    import numpy as np
    import torch
    import basicsr.models.base_model as base_model
    import basicsr.test as bsr_test
    import basicsr.train as bsr_train
    import basicsr.utils.dist_util as dist_util
    import basicsr.utils.options as bsr_options

    safe = [argparse.Namespace, np.dtype, type(np.dtype(np.float64))]
    scalar = getattr(getattr(np, '_core', None), 'multiarray', None)
    if scalar is not None and hasattr(scalar, 'scalar'):
        safe.append(scalar.scalar)
    torch.serialization.add_safe_globals(safe)

    _bind_resume_fixes(bsr_train)
    bsr_options.parse_options = _wrap_parse_options(bsr_options.parse_options)
    bsr_test.parse_options = bsr_options.parse_options  # basicsr.test imported the unwrapped one
    dist_util._init_dist_pytorch = _init_dist_pytorch
    base_model.BaseModel.model_to_device = _model_to_device
    _runtime_patched = True
