"""Kernels below the archs: the neurons' time loops (neuron_loops.py) and the spike-driven convolutions
(spike_conv/: the C source in src/, built on first use, and its loader)."""
