"""Running trained networks: the inference copies of the spiking archs (``inference_network``, the one way in),
tiled inference for large images, and the CPU memory setting of the plugin's inference commands."""
from .api import inference_network
from .convert import build_inference_network
from .cpu_memory import keep_freed_memory
from .tiled import check_tile_opt, tiled_forward

__all__ = ['build_inference_network', 'check_tile_opt', 'inference_network', 'keep_freed_memory', 'tiled_forward']
