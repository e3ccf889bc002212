"""setup.py for spikerir-plugin.

Besides the package, the distribution installs `spikerir-autoload.pth` into site-packages, for both normal and
editable (`pip install -e .`) installs.  That one-line file imports the stdlib-only `spikerir_autoload` module, which
installs the import shims of `spikerir_compat` and arms a hook that imports `spikerir_plugin` right after `basicsr` is first imported, so the literal BasicSR command
`python basicsr/train.py -opt options/X.yml` sees the plugin's names.  Opt out with SPIKERIR_NO_AUTOLOAD=1.
"""
import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

HERE = os.path.dirname(os.path.abspath(__file__))
PTH_NAME = 'spikerir-autoload.pth'
PTH_LINE = 'import spikerir_autoload; spikerir_autoload.install()\n'


SHIPPED_OPTIONS = os.path.join(HERE, 'options')
SHIPPED_OPTIONS_COPY = os.path.join('spikerir_plugin', 'shipped_options')  # spikerir_plugin/recipes.py reads it


class BuildPyWithHook(build_py):
    """Normal wheels: put the .pth at the root of build_lib, i.e. into site-packages, and a copy of the shipped
    options files (options/*.yml, not a package) into the package, where the demo finds its recipe."""

    def run(self):
        super().run()
        with open(os.path.join(self.build_lib, PTH_NAME), 'w') as f:
            f.write(PTH_LINE)
        if not os.path.isdir(SHIPPED_OPTIONS):
            raise FileNotFoundError(f'{SHIPPED_OPTIONS}: the shipped options files are missing from the source tree '
                                    f'(spikerir-demo and spikerir_plugin.recipes need them)')
        target = os.path.join(self.build_lib, SHIPPED_OPTIONS_COPY)
        os.makedirs(target, exist_ok=True)
        for name in sorted(os.listdir(SHIPPED_OPTIONS)):
            if name.endswith('.yml'):
                self.copy_file(os.path.join(SHIPPED_OPTIONS, name), os.path.join(target, name))


class EditableWheelWithHook(editable_wheel):
    """Editable wheels (PEP 660) carry only setuptools' own path file; add the hook to the same wheel."""

    def _create_wheel_file(self, bdist_wheel):
        wheel_path = super()._create_wheel_file(bdist_wheel)
        from zipfile import ZIP_DEFLATED, ZipFile
        import base64
        import hashlib
        with ZipFile(wheel_path) as zf:
            entries = {name: zf.read(name) for name in zf.namelist()}
        record_name = next(n for n in entries if n.endswith('.dist-info/RECORD'))
        data = PTH_LINE.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()
        entries[PTH_NAME] = data
        entries[record_name] = entries[record_name] + f'{PTH_NAME},sha256={digest},{len(data)}\n'.encode()
        with ZipFile(wheel_path, 'w', ZIP_DEFLATED) as zf:
            for name, content in entries.items():
                zf.writestr(name, content)
        return wheel_path


def read_readme():
    with open(os.path.join(HERE, 'README.md'), encoding='utf-8') as f:
        return f.read()


setup(
    name='spikerir-plugin',
    version='0.1.0',
    description='Spiking neural networks for image restoration (SpikerIR, ESDNet, SPIDEN) as a BasicSR plugin',
    long_description=read_readme(),
    long_description_content_type='text/markdown',
    python_requires='>=3.11',
    packages=find_packages(include=['spikerir_plugin', 'spikerir_plugin.*']),
    package_data={'spikerir_plugin.ops.spike_conv': ['src/*.c']},  # the spike-convolution kernels, built on first use
    py_modules=['spikerir_compat', 'spikerir_autoload'],
    install_requires=[
        'basicsr==1.4.2', 'torch', 'torchvision', 'spikingjelly>=2', 'lmdb', 'opencv-python', 'pyyaml',
        'tb-nightly', 'addict', 'scikit-image', 'scipy', 'tqdm', 'matplotlib',
    ],
    entry_points={'console_scripts': [
        'spikerir-train=spikerir_plugin.train:main',
        'spikerir-test=spikerir_plugin.test:main',
        'spikerir-prepare=spikerir_plugin.tools.prepare_data:main',
        'spikerir-energy=spikerir_plugin.tools.energy_report:main',
        'spikerir-demo=spikerir_plugin.demo:main',
        'spikerir-restore=spikerir_plugin.tools.restore:main',
    ]},
    cmdclass={'build_py': BuildPyWithHook, 'editable_wheel': EditableWheelWithHook},
)
