"""``Restorer``: a trained network ready to restore images (as Real-ESRGAN's RealESRGANer): its inference copy on a
device, bf16 autocast and tiling, and the image layout it needs (image_io.py). spikerir-restore is its command line.
"""
import torch

from spikerir_plugin.archs.arch_util import input_channels
from spikerir_plugin.inference import inference_network, tiled_forward
from spikerir_plugin.models import speed as train_speed
from .image_io import RestoreError, from_batch, to_batch  # noqa: F401  (RestoreError: raised here too)


def build_restore_network(net_opt, ckpt, param_key, strict, option, source):
    """The network of `net_opt` (named `source` in errors: network_g or --arch) with the weights of `ckpt`."""
    from basicsr.utils.registry import ARCH_REGISTRY
    from spikerir_plugin.utils.options import network_from_options
    if source == '--arch' and net_opt['type'] not in ARCH_REGISTRY:
        raise KeyError(f'--arch: unknown arch {net_opt["type"]!r}; registered archs: '
                       f'{", ".join(sorted(ARCH_REGISTRY.keys()))}')
    return network_from_options(net_opt, source, ckpt, param_key, strict, which='g', option=option)


class Restorer:
    """``restore(img, peak)``: the restored image (same layout and peak) of an RGB/gray array read by
    ``image_io.load_image``. ``exact=False``: the fast inference copy of a spiking net (a ValueError names a network
    without one); ``tile``: (size, overlap) or None; ``net_opt``: the network's options, for its channel count."""

    def __init__(self, net, device, exact=True, bf16=False, tile=None, net_opt=None):
        self.device, self.tile = device, tile
        self.channels = input_channels(net, net_opt)
        self.speed = {'bf16': bf16}
        net = net.to(device)
        train_speed.prepare_model(net, self.speed)
        self.runner = inference_network(net, exact=exact)

    def forward(self, x):
        with torch.no_grad(), train_speed.autocast_context(self.device, self.speed):
            x = x.to(self.device)
            return (tiled_forward(self.runner, x, *self.tile) if self.tile else self.runner(x)).float().cpu()

    def restore(self, img, peak):
        """(restored image, the network's input batch)."""
        x, layout = to_batch(img, peak, self.channels)
        try:
            y = self.forward(x)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            raise RestoreError(f'out of GPU memory on a {img.shape[1]}x{img.shape[0]} image; use --tile '
                               '(e.g. --tile 512) or --bf16') from None
        if y.shape[0] != x.shape[0] or y.shape[1] != x.shape[1]:
            raise RestoreError(f'the network returned shape {tuple(y.shape)} for input {tuple(x.shape)}; '
                               'restore needs as many output as input channels')
        return from_batch(y, layout, peak), x
