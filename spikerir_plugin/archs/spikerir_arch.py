"""SpikerIR: the spiking student of H-KD ("Bridge the Gap between SNN and ANN for Image Restoration", arXiv
2504.01755).

The paper does not define the block (it names a "Spiking Block", a "Spike Convolution Unit" and a
"Multi-dimensional Attention", the parts of ESDNet's spiking residual block), so this is our disclosed choice:
ESDNet's spiking residual-block U-Net at a much smaller width, direct encoding (image conv repeated over T), mean
over T, one conv head and a global residual. One change to ESDNet's block: by default its shortcut conv reads the block's spikes
instead of the real-valued block input (shortcut='spike'), so every conv inside the blocks is spike-driven; with
ESDNet's analog shortcut those convs were dense MACs at every time step and most of the student's energy.
`decoder_level3/2/1` output [T, B, C, H, W] and are the declared hint layers (``hint_layers()``; C = 4*dim, 2*dim,
2*dim).
"""
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from spikerir_plugin.archs.spiking_blocks import SpikingUNet

# Parameter counts (in_channels = out_channels = 3, attention 'fast' or 'spikingjelly'; checked in the tests):
#   'tiny' (dim 8, enc 1/1/1, dec 1/1/1): 92,935  (~0.09M, the paper's 0.07M scale; 1/281 of Restormer)
#   'base' (dim 16, enc 2/2/2, dec 2/2/2): 686,571  (~0.70M)
PRESETS = {
    'tiny': dict(dim=8, enc_blocks=(1, 1, 1), dec_blocks=(1, 1, 1)),
    'base': dict(dim=16, enc_blocks=(2, 2, 2), dec_blocks=(2, 2, 2)),
}


@ARCH_REGISTRY.register()
class SpikerIR(SpikingUNet):
    """Spiking U-Net student; `preset` sets dim/enc_blocks/dec_blocks, explicit arguments override it.

    Args:
        preset: 'tiny' (92,935 params, default) or 'base' (686,571 params).
        dim: level-1 width (levels use dim, 2*dim, 4*dim).
        enc_blocks, dec_blocks: spiking residual blocks per level, level 1 first.
        T: time steps. neuron: 'lif' | 'plif' (learnt time constant) | 'if' | 'rate' (the analog twin: same
            layers, no spikes; a same-architecture ANN teacher, see neurons.RateActivation) | 'rate<N>', e.g.
            'rate4' (the twin with the LIF's rate quantised to N steps, neurons.QuantizedRateActivation).
            attention: 'fast' | 'spikingjelly' | 'none'.
        shortcut: 'spike' (default: block shortcut conv on spikes) | 'analog' (ESDNet's, on the block input).
        reduction_t, reduction_c: squeeze ratios of the attention's temporal and channel MLPs
            (need T >= reduction_t and dim >= reduction_c).
    """

    def __init__(self, in_channels=3, out_channels=3, preset='tiny', dim=None, enc_blocks=None, dec_blocks=None,
                 T=4, neuron='lif', attention='fast', reduction_t=4, reduction_c=4, shortcut='spike'):
        if preset not in PRESETS:
            raise ValueError(f'SpikerIR preset {preset!r} is unknown; valid presets: {sorted(PRESETS)}')
        size = dict(PRESETS[preset])
        size.update({k: v for k, v in dict(dim=dim, enc_blocks=enc_blocks, dec_blocks=dec_blocks).items()
                     if v is not None})
        super().__init__(in_channels, size['dim'], list(size['enc_blocks']), list(size['dec_blocks']), T, neuron,
                         attention, reduction_t, reduction_c, shortcut=shortcut)
        self.output = nn.Conv2d(size['dim'] * 2, out_channels, 3, 1, 1)

    def head(self, features):
        return self.output(features)
