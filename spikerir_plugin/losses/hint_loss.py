"""Feature-hint distance between (adapted) student features and teacher features (H-KD)."""
from torch import nn
from torch.nn import functional as F

from basicsr.utils.registry import LOSS_REGISTRY

_CRITERIA = ('mse', 'l1')
_REDUCTIONS = ('none', 'mean', 'sum')
NORMALIZATIONS = ('none', 'channel', 'pixel', 'sample', 'affinity')


@LOSS_REGISTRY.register()
class HintLoss(nn.Module):
    """loss_weight * distance(student_feat, teacher_feat) for [B, C, H, W] feature maps of equal shape.

    Args:
        criterion (str): 'mse' (squared error, FitNets-style hints) or 'l1'. Default: 'mse'.
        loss_weight (float): multiplier. Default: 1.0.
        reduction (str): 'none' | 'mean' | 'sum'. Default: 'mean'.
        normalize (str | bool): what both features are reduced to before the distance, because spike-rate
            features and ANN activations live on very different scales:
            'none' (or false): the raw features (the paper's plain MSE; default);
            'channel' (or true): each channel of each sample standardised over H, W (zero mean, unit std);
            'pixel': each pixel's channel vector scaled to unit L2 norm (only its direction counts);
            'sample': each sample divided by its root-mean-square over C, H, W (one scale per sample);
            'affinity': the H*W x H*W matrix of cosine similarities between pixels' channel vectors (FAKD,
                ICIP 2020): which pixels look alike, independent of channel order and scale.
        eps (float): keeps the divisions finite. Default: 1e-6.
    """

    def __init__(self, criterion='mse', loss_weight=1.0, reduction='mean', normalize='none', eps=1e-6):
        super().__init__()
        if criterion not in _CRITERIA:
            raise ValueError(f'HintLoss: unsupported criterion {criterion!r}; valid: {", ".join(_CRITERIA)}')
        if reduction not in _REDUCTIONS:
            raise ValueError(f'HintLoss: unsupported reduction {reduction!r}; valid: {", ".join(_REDUCTIONS)}')
        normalize = {False: 'none', True: 'channel', None: 'none'}.get(normalize, normalize)
        if normalize not in NORMALIZATIONS:
            raise ValueError(f'HintLoss: unsupported normalize {normalize!r}; valid: {", ".join(NORMALIZATIONS)} '
                             '(or true/false)')
        self.criterion = criterion
        self.loss_weight = loss_weight
        self.reduction = reduction
        self.normalize = normalize
        self.eps = eps

    def _reduce(self, x):
        if self.normalize == 'channel':
            mean = x.mean(dim=(-2, -1), keepdim=True)
            std = x.std(dim=(-2, -1), keepdim=True, unbiased=False)
            return (x - mean) / (std + self.eps)
        if self.normalize == 'pixel':
            return x / (x.norm(dim=1, keepdim=True) + self.eps)
        if self.normalize == 'sample':
            return x / (x.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt() + self.eps)
        if self.normalize == 'affinity':
            unit = x.flatten(2) / (x.flatten(2).norm(dim=1, keepdim=True) + self.eps)  # [B, C, HW]
            return unit.transpose(1, 2) @ unit  # [B, HW, HW]
        return x

    def forward(self, student_feat, teacher_feat, **kwargs):
        if student_feat.shape != teacher_feat.shape:
            raise ValueError(f'HintLoss: feature shapes differ: student {tuple(student_feat.shape)} vs teacher '
                             f'{tuple(teacher_feat.shape)} (adapt channels and resize before the loss)')
        student_feat, teacher_feat = self._reduce(student_feat), self._reduce(teacher_feat.detach())
        fn = F.mse_loss if self.criterion == 'mse' else F.l1_loss
        return self.loss_weight * fn(student_feat, teacher_feat, reduction=self.reduction)
