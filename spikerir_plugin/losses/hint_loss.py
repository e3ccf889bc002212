"""Feature-hint distance between (adapted) student features and teacher features (H-KD)."""
import torch
from torch import nn
from torch.nn import functional as F

from basicsr.utils.registry import LOSS_REGISTRY

_CRITERIA = ('mse', 'l1')
_REDUCTIONS = ('none', 'mean', 'sum')


@LOSS_REGISTRY.register()
class HintLoss(nn.Module):
    """loss_weight * distance(student_feat, teacher_feat) for [B, C, H, W] feature maps of equal shape.

    Args:
        criterion (str): 'mse' (squared error, FitNets-style hints) or 'l1'. Default: 'mse'.
        loss_weight (float): multiplier. Default: 1.0.
        reduction (str): 'none' | 'mean' | 'sum'. Default: 'mean'.
        normalize (bool): standardise each channel of each sample over H, W (zero mean, unit std) before the
            distance, so that the loss ignores per-channel scale/offset; spike-rate features and ANN activations
            live on very different scales. Off by default (the paper's plain MSE). Default: False.
        eps (float): added to the std when normalising. Default: 1e-6.
    """

    def __init__(self, criterion='mse', loss_weight=1.0, reduction='mean', normalize=False, eps=1e-6):
        super().__init__()
        if criterion not in _CRITERIA:
            raise ValueError(f'HintLoss: unsupported criterion {criterion!r}; valid: {", ".join(_CRITERIA)}')
        if reduction not in _REDUCTIONS:
            raise ValueError(f'HintLoss: unsupported reduction {reduction!r}; valid: {", ".join(_REDUCTIONS)}')
        self.criterion = criterion
        self.loss_weight = loss_weight
        self.reduction = reduction
        self.normalize = normalize
        self.eps = eps

    def _standardise(self, x):
        mean = x.mean(dim=(-2, -1), keepdim=True)
        std = x.std(dim=(-2, -1), keepdim=True, unbiased=False)
        return (x - mean) / (std + self.eps)

    def forward(self, student_feat, teacher_feat, **kwargs):
        if student_feat.shape != teacher_feat.shape:
            raise ValueError(f'HintLoss: feature shapes differ: student {tuple(student_feat.shape)} vs teacher '
                             f'{tuple(teacher_feat.shape)} (adapt channels and resize before the loss)')
        teacher_feat = teacher_feat.detach()
        if self.normalize:
            student_feat, teacher_feat = self._standardise(student_feat), self._standardise(teacher_feat)
        fn = F.mse_loss if self.criterion == 'mse' else F.l1_loss
        return self.loss_weight * fn(student_feat, teacher_feat, reduction=self.reduction)
