"""PSNR loss in NAFNet's convention (absent from basicsr 1.4.2)."""
import math

import torch
from torch import nn

from basicsr.utils.registry import LOSS_REGISTRY


@LOSS_REGISTRY.register()
class PSNRLoss(nn.Module):
    """loss_weight * 10/ln(10) * mean_over_batch(log(MSE_i + 1e-8)), MSE_i over C, H, W of sample i.

    This is -PSNR (dB, peak 1) up to the 1e-8 guard, so minimising it maximises the per-image PSNR; the per-sample
    log weights hard (low-PSNR) images more than an L2 loss would.

    Args:
        loss_weight (float): multiplier. Default: 1.0.
        reduction (str): only 'mean' (kept for YAML compatibility with NAFNet). Default: 'mean'.
        toY (bool): compare the ITU-R BT.601 luma (Y in [16, 235] / 255) of RGB inputs in [0, 1] instead of RGB.
    """

    # BT.601 RGB->Y for inputs in [0, 255]: Y = 16 + 65.481 R/255 + 128.553 G/255 + 24.966 B/255
    _Y_COEF = (65.481, 128.553, 24.966)

    def __init__(self, loss_weight=1.0, reduction='mean', toY=False):
        super().__init__()
        if reduction != 'mean':
            raise ValueError(f'PSNRLoss: unsupported reduction {reduction!r}; valid: mean')
        self.loss_weight = loss_weight
        self.scale = 10 / math.log(10)
        self.toY = toY
        self.register_buffer('y_coef', torch.tensor(self._Y_COEF).reshape(1, 3, 1, 1), persistent=False)

    def _to_y(self, img):
        if img.shape[1] != 3:
            raise ValueError(f'PSNRLoss(toY=True) needs 3-channel RGB input, got {img.shape[1]} channels')
        return ((img * self.y_coef.to(img)).sum(dim=1, keepdim=True) + 16.) / 255.

    def forward(self, pred, target, **kwargs):
        if self.toY:
            pred, target = self._to_y(pred), self._to_y(target)
        mse = ((pred - target) ** 2).mean(dim=(1, 2, 3))
        return self.loss_weight * self.scale * torch.log(mse + 1e-8).mean()
