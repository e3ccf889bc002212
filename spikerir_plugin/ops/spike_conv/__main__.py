"""python -m spikerir_plugin.ops.spike_conv: build (or find) the spike-driven convolution kernels and say whether
they are available here."""
from spikerir_plugin.ops.spike_conv import kernels
from spikerir_plugin.utils import console

console.status(f'spike-driven convolution kernels: {"available" if kernels() else "unavailable"}')
