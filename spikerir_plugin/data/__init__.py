"""Registers every `*_dataset.py` module of this folder (one registered class per file, as in basicsr)."""
from spikerir_plugin.utils.registry_scan import import_modules_with_suffix

_modules = import_modules_with_suffix(__name__, __file__, '_dataset')
