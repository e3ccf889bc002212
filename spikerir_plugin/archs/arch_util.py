"""What the archs share: padding images to a size the U-Nets can halve and double back, and how many image
channels a network reads (one list of the constructor arguments archs use for it)."""
import inspect

import torch.nn.functional as F
from torch import nn

# constructor arguments archs (the plugin's, basicsr's, common public ones) use for the input image channels
INPUT_CHANNEL_ARGS = ('in_channels', 'inp_channels', 'img_channel', 'num_in_ch', 'in_chans', 'in_nc', 'in_ch')


def pad_to_multiple(x, multiple, mode='reflect'):
    """Pad the bottom/right of [..., H, W] so H and W are multiples of `multiple`.

    Reflect padding needs the pad to be smaller than the side, so tiny sides fall back to replicate padding.
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    if mode == 'reflect' and (pad_h >= h or pad_w >= w):
        mode = 'replicate'
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def input_channels(net, net_opt=None):
    """Image channels ``net`` reads: its options' channel argument (``net_opt``), else the network's attribute of
    that name, else (with ``net_opt``: the options leave it at) the argument's default, else its first
    convolution's input channels."""
    for name in INPUT_CHANNEL_ARGS:
        if net_opt and name in net_opt:
            return int(net_opt[name])
    for name in INPUT_CHANNEL_ARGS:
        value = getattr(net, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    try:
        params = inspect.signature(type(net).__init__).parameters if net_opt is not None else {}
    except (TypeError, ValueError):
        params = {}
    for name in INPUT_CHANNEL_ARGS:
        if name in params and isinstance(params[name].default, int):
            return params[name].default
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.Linear)):
            return module.in_channels if hasattr(module, 'in_channels') else module.in_features
    raise ValueError(f'{type(net).__name__}: cannot tell how many input channels it reads (no channel argument or '
                     'attribute and no convolution)')
