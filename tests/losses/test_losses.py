"""FFTLoss / HintLoss / PSNRLoss against hand computations (numpy, basicsr's own colour conversion)."""
import math

import numpy as np
import pytest
import torch

import spikerir_plugin  # noqa: F401  (registers the losses)
from basicsr.losses import build_loss
from basicsr.utils.color_util import rgb2ycbcr_pt
from basicsr.utils.registry import LOSS_REGISTRY


def _pair(seed=0, shape=(2, 3, 8, 6)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float64), torch.rand(shape, generator=g, dtype=torch.float64)


def test_plugin_losses_registered_next_to_basicsr_ones():
    for name in ('FFTLoss', 'HintLoss', 'PSNRLoss', 'L1Loss', 'MSELoss', 'CharbonnierLoss'):
        assert name in LOSS_REGISTRY


def test_fft_loss_matches_numpy_fft2():
    pred, target = _pair()
    expected = np.abs(np.fft.fft2(pred.numpy()) - np.fft.fft2(target.numpy())).mean()
    loss = build_loss({'type': 'FFTLoss', 'loss_weight': 0.1})
    assert loss(pred, target).item() == pytest.approx(0.1 * expected, rel=1e-5)
    summed = build_loss({'type': 'FFTLoss', 'reduction': 'sum'})(pred, target).item()
    assert summed == pytest.approx(expected * pred.numel(), rel=1e-5)
    assert build_loss({'type': 'FFTLoss', 'reduction': 'none'})(pred, target).shape == pred.shape
    assert build_loss({'type': 'FFTLoss'})(pred, pred).item() == 0


def test_fft_loss_of_a_constant_offset_is_the_dc_term_only():
    # FFT2 of a constant c over HxW is c*H*W at frequency 0 and 0 elsewhere
    target = torch.zeros(1, 1, 4, 5)
    loss = build_loss({'type': 'FFTLoss'})(target + 0.5, target).item()
    assert loss == pytest.approx(0.5 * 20 / 20)


@pytest.mark.parametrize('criterion', ['mse', 'l1'])
def test_hint_loss_matches_hand_computation(criterion):
    s, t = _pair(1, (2, 4, 5, 5))
    diff = (s - t).numpy()
    expected = (diff ** 2).mean() if criterion == 'mse' else np.abs(diff).mean()
    loss = build_loss({'type': 'HintLoss', 'criterion': criterion, 'loss_weight': 2.0})
    assert loss(s, t).item() == pytest.approx(2 * expected, rel=1e-6)


def test_hint_loss_normalisation_ignores_per_channel_scale_and_offset():
    s, t = _pair(2, (2, 3, 6, 6))
    scale = torch.tensor([3.0, 0.5, 7.0], dtype=torch.float64).reshape(1, 3, 1, 1)
    shifted = s * scale + 4.0
    norm = build_loss({'type': 'HintLoss', 'normalize': True})
    plain = build_loss({'type': 'HintLoss'})
    assert norm(shifted, t).item() == pytest.approx(norm(s, t).item(), rel=1e-5)
    assert plain(shifted, t).item() != pytest.approx(plain(s, t).item(), rel=1e-2)
    # hand computation of the standardised MSE
    z = lambda x: (x - x.mean(dim=(2, 3), keepdim=True)) / (x.std(dim=(2, 3), keepdim=True, unbiased=False) + 1e-6)
    assert norm(s, t).item() == pytest.approx(((z(s) - z(t)) ** 2).mean().item(), rel=1e-6)


def test_hint_loss_does_not_backpropagate_into_the_teacher_and_rejects_bad_input():
    s = torch.rand(1, 2, 3, 3, requires_grad=True)
    t = torch.rand(1, 2, 3, 3, requires_grad=True)
    build_loss({'type': 'HintLoss'})(s, t).backward()
    assert s.grad is not None and t.grad is None
    with pytest.raises(ValueError, match='shapes differ'):
        build_loss({'type': 'HintLoss'})(torch.rand(1, 2, 3, 3), torch.rand(1, 3, 3, 3))
    with pytest.raises(ValueError, match="criterion 'cos'.*mse, l1"):
        build_loss({'type': 'HintLoss', 'criterion': 'cos'})


def test_psnr_loss_is_minus_the_mean_per_image_psnr():
    gt = torch.zeros(2, 3, 4, 4, dtype=torch.float64)
    pred = gt.clone()
    pred[0] += 0.1  # MSE 1e-2 -> 20 dB
    pred[1] += 0.01  # MSE 1e-4 -> 40 dB
    loss = build_loss({'type': 'PSNRLoss'})(pred, gt).item()
    expected = 10 / math.log(10) * (math.log(1e-2 + 1e-8) + math.log(1e-4 + 1e-8)) / 2
    assert loss == pytest.approx(expected, rel=1e-9)
    assert loss == pytest.approx(-30.0, abs=1e-3)  # the 1e-8 guard shifts 40 dB by ~4e-4
    assert build_loss({'type': 'PSNRLoss', 'loss_weight': 0.5})(pred, gt).item() == pytest.approx(loss / 2)


def test_psnr_loss_toY_uses_bt601_luma():
    pred, gt = _pair(3, (2, 3, 5, 5))
    pred, gt = pred.float(), gt.float()
    y_pred, y_gt = rgb2ycbcr_pt(pred, y_only=True), rgb2ycbcr_pt(gt, y_only=True)
    mse = ((y_pred - y_gt) ** 2).mean(dim=(1, 2, 3))
    expected = (10 / math.log(10) * torch.log(mse + 1e-8)).mean().item()
    assert build_loss({'type': 'PSNRLoss', 'toY': True})(pred, gt).item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match='reduction'):
        build_loss({'type': 'PSNRLoss', 'reduction': 'sum'})


def test_hint_loss_normalisations_drop_exactly_the_scale_they_name():
    s, t = _pair(5, (2, 4, 5, 5))
    per_pixel = torch.rand(2, 1, 5, 5, dtype=torch.float64) + 0.5
    per_sample = torch.tensor([3.0, 0.2], dtype=torch.float64).reshape(2, 1, 1, 1)
    per_channel = torch.tensor([3.0, 0.5, 7.0, 1.5], dtype=torch.float64).reshape(1, 4, 1, 1)
    rotation = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))[0]  # orthogonal channel mixing
    rotated = torch.einsum('dc,bchw->bdhw', rotation, s)

    def loss(mode, a, b=t):
        return build_loss({'type': 'HintLoss', 'normalize': mode})(a, b).item()

    # pixel: only each pixel's channel direction counts
    assert loss('pixel', s * per_pixel) == pytest.approx(loss('pixel', s), rel=1e-4)
    assert loss('pixel', s * per_channel) != pytest.approx(loss('pixel', s), rel=1e-3)
    assert loss('pixel', t * per_pixel) == pytest.approx(0, abs=1e-12)
    # sample: one scale per sample
    assert loss('sample', s * per_sample) == pytest.approx(loss('sample', s), rel=1e-4)
    assert loss('sample', s * per_channel) != pytest.approx(loss('sample', s), rel=1e-3)
    # affinity: which pixels look alike; blind to channel order, rotation and per-pixel scale
    assert loss('affinity', rotated) == pytest.approx(loss('affinity', s), rel=1e-4)
    assert loss('affinity', s * per_pixel) == pytest.approx(loss('affinity', s), rel=1e-4)
    assert loss('affinity', s) > 0 and loss('affinity', t[:, [2, 0, 3, 1]]) == pytest.approx(0, abs=1e-12)
    # true/false keep their meaning: channel standardisation / none
    assert loss(True, s) == pytest.approx(loss('channel', s)) and loss(False, s) == pytest.approx(loss('none', s))
    with pytest.raises(ValueError, match="normalize 'layer'.*none, channel, pixel, sample, affinity"):
        build_loss({'type': 'HintLoss', 'normalize': 'layer'})
