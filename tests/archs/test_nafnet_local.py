"""NAFNetLocal: NAFNet up to base_size, local channel-attention statistics above it, NAFNet's state dict."""
import copy

import pytest
import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

import spikerir_plugin  # noqa: F401
from spikerir_plugin.archs.nafnet_arch import NAFNet
from spikerir_plugin.archs.nafnet_local_arch import LocalAvgPool2d, NAFNetLocal

SMALL = dict(width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1])


def pair(train_size=32, **local):
    torch.manual_seed(0)
    plain = NAFNet(**SMALL)
    for name, p in plain.named_parameters():  # NAFNet starts with beta = gamma = 0 (identity blocks)
        if name.endswith(('beta', 'gamma')):
            nn.init.normal_(p, std=0.5)
    local_net = NAFNetLocal(**SMALL, train_size=train_size, **local)
    local_net.load_state_dict(plain.state_dict())
    return plain.eval(), local_net.eval()


class BoxMean(nn.Module):
    """Reference local mean: avg_pool2d over every full k x k window, replicate-padded (centered) to the input."""

    def __init__(self, k):
        super().__init__()
        self.k = k

    def forward(self, x):
        h, w = x.shape[-2:]
        kh, kw = min(self.k, h), min(self.k, w)
        if kh == h and kw == w:
            return x.mean((-2, -1), keepdim=True)
        out = F.avg_pool2d(x.double(), (kh, kw), stride=1)
        dh, dw = h - out.shape[-2], w - out.shape[-1]
        return F.pad(out, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), mode='replicate').to(x.dtype)


def test_registered_and_state_dict_keys_equal_nafnet():
    assert ARCH_REGISTRY.get('NAFNetLocal') is NAFNetLocal
    with torch.device('meta'):  # the official GoPro size, without allocating 68M parameters twice
        plain, local = NAFNet(preset='gopro-width64'), NAFNetLocal(preset='gopro-width64')
    plain_state, local_state = plain.state_dict(), local.state_dict()
    assert list(plain_state) == list(local_state)
    assert all(plain_state[k].shape == v.shape for k, v in local_state.items())
    assert local.hint_layers() == plain.hint_layers()


@pytest.mark.parametrize('size', [(32, 32), (24, 40), (48, 48), (16, 8)])
def test_equals_nafnet_up_to_the_base_size(size):
    plain, local = pair(train_size=32)  # base size 48
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        assert torch.equal(local(x), plain(x))


def test_local_statistics_above_the_base_size_match_an_independent_box_mean():
    plain, local = pair(train_size=32)
    reference = copy.deepcopy(plain)
    # train 32 -> base 48: windows 48 at full resolution, 24 at 1/2 (encoder 1, decoder 0), 12 at 1/4 (middle)
    for blocks, k in ((reference.encoders[0], 48), (reference.encoders[1], 24), (reference.middle_blks, 12),
                      (reference.decoders[0], 24), (reference.decoders[1], 48)):
        for block in blocks:
            block.sca[0] = BoxMean(k)
    x = torch.rand(1, 3, 64, 80)
    with torch.no_grad():
        got, want, glob = local(x), reference(x), plain(x)
    assert (got - glob).abs().max() > 1e-3  # the local pool changes the output ...
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)  # ... exactly as the box mean does


def test_windows_follow_train_and_base_size():
    net = NAFNetLocal(**SMALL, train_size=[1, 3, 30, 40], base_size=[60, 50])  # padded to 32 x 40
    kernels = [b.sca[0].kernel_size for b in (net.encoders[0][0], net.encoders[1][0], net.middle_blks[0])]
    assert kernels == [(32 * 60 // 30, 40 * 50 // 40), (16 * 60 // 30, 20 * 50 // 40), (8 * 60 // 30, 10 * 50 // 40)]
    assert net.decoders[1][0].sca[0].kernel_size == kernels[0]
    with pytest.raises(ValueError, match='train_size'):
        NAFNetLocal(**SMALL, train_size='256')


def test_fast_imp_samples_every_r_th_position_and_equals_global_below_the_base_size():
    x = torch.rand(1, 2, 12, 15)
    pool = LocalAvgPool2d((6, 5), fast_imp=True, max_stride=(1, 1))
    # stride 1: windows of the inclusive integral image start one sample in, as in the official fast path
    s = F.avg_pool2d(x[..., 1:, 1:].double(), (6, 5), stride=1)
    dh, dw = 12 - s.shape[-2], 15 - s.shape[-1]
    want = F.pad(s, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), mode='replicate').float()
    torch.testing.assert_close(pool(x), want, rtol=0, atol=1e-6)
    strided = LocalAvgPool2d((6, 6), fast_imp=True, max_stride=(3, 3))(x)  # 12 -> stride 4 capped to 3, 15 -> 3
    assert strided.shape == x.shape
    assert torch.equal(strided[..., 6:9, 6:9], strided[..., 6:7, 6:7].expand(-1, -1, 3, 3))  # nearest upsampling
    plain, fast = pair(train_size=32, fast_imp=True)
    small = torch.rand(1, 3, 40, 40)
    with torch.no_grad():
        assert torch.equal(fast(small), plain(small))
        big = torch.rand(1, 3, 80, 80)
        _, exact = pair(train_size=32)
        torch.testing.assert_close(fast(big), exact(big), rtol=0, atol=0.1)  # an approximation of the local pool


def test_low_precision_input_keeps_its_dtype_and_accurate_windows():
    x = torch.rand(1, 4, 40, 40)
    pool = LocalAvgPool2d((16, 16))
    out = pool(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), BoxMean(16)(x.bfloat16().float()), rtol=0, atol=1e-2)
