"""The startup hook: ``spikerir-autoload.pth`` (installed into site-packages) calls ``install()`` at interpreter
start. It installs the import shims (``spikerir_compat``) and arms a one-shot finder that imports ``spikerir_plugin``
right after ``basicsr`` is first imported, so the literal BasicSR command ``python basicsr/train.py -opt X.yml``
sees the plugin's names. Nothing else: stdlib only, nothing heavy imported at start. Opt out with
SPIKERIR_NO_AUTOLOAD=1.
"""
import importlib
import os
import sys

import spikerir_compat

AUTOLOAD_OPT_OUT_ENV = 'SPIKERIR_NO_AUTOLOAD'


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


def install():
    """Called by ``spikerir-autoload.pth`` at interpreter start.  Never raises; costs two list appends."""
    try:
        if os.environ.get(AUTOLOAD_OPT_OUT_ENV, '') not in ('', '0'):
            return
        spikerir_compat.install_import_shims()
        if 'basicsr' not in sys.modules and not any(isinstance(f, _BasicsrWatcher) for f in sys.meta_path):
            sys.meta_path.insert(0, _BasicsrWatcher())
    except Exception:  # pragma: no cover - defensive, a .pth must not print tracebacks at every start
        pass
