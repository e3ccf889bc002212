"""ESDNet (Song et al., IJCAI 2024, "Learning A Spiking Neural Network for Efficient Image Deraining").

State_dict keys and shapes equal the official model.py (MingTian99/ESDNet), so released checkpoints load with
strict=True. Differences from the official code, none of which changes the parameters: runs on any device
(no .cuda(), one interpolate for all time steps), T is honoured by the attention instead of a hard-coded 4,
MultiDimensionalAttention defaults to the fast equivalent (attention='spikingjelly' selects the library module),
and any H, W works (reflect-padded to multiples of 4, cropped back).
"""
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from spikerir_plugin.archs.spiking_blocks import FeatureRefinementBlock, SpikingUNet


@ARCH_REGISTRY.register()
class ESDNet(SpikingUNet):
    """Defaults are the released configuration: dim 48, encoder 4/4/8, decoder 2/2/2, T=4 (12.81M parameters).

    Block lists have 4 entries as in the official constructor; only the first 3 (levels 1..3) are used.
    """

    def __init__(self, inp_channels=3, out_channels=3, dim=48, en_num_blocks=(4, 4, 8, 8),
                 de_num_blocks=(2, 2, 2, 2), bias=False, T=4, neuron='lif', attention='fast',
                 reduction_t=4, reduction_c=16):
        super().__init__(inp_channels, dim, list(en_num_blocks), list(de_num_blocks), T, neuron, attention,
                         reduction_t, reduction_c, bias)
        self.refinement = FeatureRefinementBlock(dim * 2, reduction=8)
        self.output = nn.Sequential(nn.Conv2d(dim * 2, out_channels, 3, 1, 1))

    def head(self, features):
        return self.output(self.refinement(features))
