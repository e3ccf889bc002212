"""Frequency-domain L1 loss (ESDNet's `fftLoss`, used by SpikerIR as the lambda*FFT reconstruction term)."""
import torch
from torch import nn

from basicsr.utils.registry import LOSS_REGISTRY

_REDUCTIONS = ('none', 'mean', 'sum')


@LOSS_REGISTRY.register()
class FFTLoss(nn.Module):
    """loss_weight * reduce(|FFT2(pred) - FFT2(target)|), the modulus of the complex difference per frequency.

    The 2-D FFT runs over the last two dims of [B, C, H, W] tensors with torch's default ("backward") norm, i.e.
    unnormalised, as in ESDNet's losses.py. Computed in float32 even under autocast (cuFFT half needs powers of 2).

    Args:
        loss_weight (float): multiplier (the paper's lambda, 0.1 in the SpikerIR recipe). Default: 1.0.
        reduction (str): 'none' | 'mean' | 'sum'. Default: 'mean'.
    """

    def __init__(self, loss_weight=1.0, reduction='mean'):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f'FFTLoss: unsupported reduction {reduction!r}; valid: {", ".join(_REDUCTIONS)}')
        self.loss_weight = loss_weight
        self.reduction = reduction

    def forward(self, pred, target, **kwargs):
        diff = torch.fft.fft2(pred.float()) - torch.fft.fft2(target.float())
        loss = diff.abs()
        if self.reduction == 'mean':
            loss = loss.mean()
        elif self.reduction == 'sum':
            loss = loss.sum()
        return self.loss_weight * loss
