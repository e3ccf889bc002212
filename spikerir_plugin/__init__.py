"""spikerir-plugin: spiking-network image restoration for BasicSR.

Importing this package registers every plugin name (archs, datasets, losses, models) into basicsr's registries,
exactly once, after making basicsr 1.4.2 importable on the current stack (spikerir_compat), and applies the runtime
fixes basicsr needs to launch (launch.py: the plugin's only change to basicsr's behaviour).
"""
import spikerir_compat

spikerir_compat.install_import_shims()  # must precede the first `import basicsr`

from . import archs, data, losses, models  # noqa: E402,F401  (registration happens on import)
from . import launch  # noqa: E402

launch.apply()

__version__ = '0.1.0'
