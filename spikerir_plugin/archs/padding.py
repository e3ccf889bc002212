"""Pad images to a size the U-Nets can halve and double back, and crop the result."""
import torch.nn.functional as F


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
