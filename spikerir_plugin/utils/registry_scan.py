"""Import every module of a subpackage whose file name ends with a suffix, as basicsr does for its own folders."""
import importlib
import os


def import_modules_with_suffix(package_name, package_file, suffix):
    folder = os.path.dirname(os.path.abspath(package_file))
    names = sorted(f[:-3] for f in os.listdir(folder) if f.endswith(suffix + '.py'))
    return [importlib.import_module(f'{package_name}.{name}') for name in names]
