"""spikerir-plugin: spiking-network image restoration for BasicSR.

Importing this package registers every plugin name (archs, datasets, losses, models) into basicsr's registries,
exactly once, after making basicsr 1.4.2 importable on the current stack (see spikerir_compat).
"""
import spikerir_compat

spikerir_compat.install_import_shims()  # must precede the first `import basicsr`

from . import archs, data, losses, models  # noqa: E402,F401  (registration happens on import)

spikerir_compat.patch_runtime()

__version__ = '0.1.0'
