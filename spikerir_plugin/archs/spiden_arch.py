"""SPIDEN-style spiking denoiser (Castagnetti et al., Front. Neurosci. 2023), reconstructed from the abstract.

DnCNN-like: `depth` conv layers, all but the last conv -> BN -> IF neuron (BN statistics over T*B*H*W), on the
image repeated T times. The last conv is read out as a non-spiking integrator: its outputs are accumulated over the
T steps and divided by T (the membrane potential of a neuron that never fires), giving the predicted noise.
Output = input - noise. Depth, width, the IF threshold and BN placement are our choices (the paper's are not
readable); defaults follow DnCNN-S (17 layers, 64 channels).
"""
from basicsr.utils.registry import ARCH_REGISTRY
from spikingjelly.activation_based import layer
from torch import nn

from spikerir_plugin.archs.spiking_blocks import conv, make_neuron


@ARCH_REGISTRY.register()
class SPIDEN(nn.Module):
    """``spikerir_plugin.inference.inference_network`` gives its inference copy."""

    has_inference_copy = True  # spikerir_plugin.inference converts it

    def __init__(self, in_channels=3, width=64, depth=17, T=4, v_threshold=1.0):
        super().__init__()
        if depth < 2:
            raise ValueError(f'SPIDEN depth must be >= 2 (first and readout layers), got {depth}')
        if not isinstance(T, int) or T < 1:
            raise ValueError(f'T must be a positive int, got {T!r}')
        self.T = T
        layers = []
        for i in range(depth - 1):
            layers += [conv(in_channels if i == 0 else width, width), layer.BatchNorm2d(width, step_mode='m'),
                       make_neuron('if', v_threshold)]
        self.body = nn.Sequential(*layers)
        self.readout = conv(width, in_channels)

    def forward(self, x):
        if x.dim() != 4:
            raise ValueError(f'SPIDEN expects images [B, C, H, W], got shape {tuple(x.shape)}')
        spikes = self.body(x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1))
        noise = self.readout(spikes).mean(0)  # integrated membrane potential / T, no firing
        return x - noise
