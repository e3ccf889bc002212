"""Import shims that let basicsr 1.4.2 be imported on torch 2.14 / torchvision 0.29 / numpy 2 / Python 3.11+.

A top-level, stdlib-only module, so that the startup hook (``spikerir_autoload``) can install the shims at
interpreter start for free: nothing heavy is imported until basicsr itself is. Only module aliases live here; the
runtime fixes basicsr needs to launch are ``spikerir_plugin/launch.py``.
"""
import importlib
import importlib.machinery
import sys

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


def install_import_shims():
    """Make ``import basicsr`` work on the current stack.  Idempotent; must run before basicsr is imported."""
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
