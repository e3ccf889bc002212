"""How far the fast training paths are from the reference path, on the ESDNet paper configuration.

Reference: ESDNet (dim 48, encoder 4/4/8, decoder 2/2/2, T=4) with spikingjelly's MultiDimensionalAttention, fp32
(TF32 off). Compared, with the same weights and inputs (one forward + backward of an L1 loss): the fast attention in
fp32, fp32 with block checkpointing, and bf16 autocast with channels_last. Prints one JSON line per path: the
relative L2 error of the output, of the input gradient and the median/max over parameters of the gradient's
relative error. Example:
    python benchmarks/esdnet_equality.py --device cuda --size 2x256
"""
import argparse
import copy
import json
import statistics
import sys

import torch
import torch.nn.functional as F

import spikerir_plugin  # noqa: F401
from spikerir_plugin.archs.esdnet_arch import ESDNet
from spikerir_plugin.models import speed as train_speed
from spikerir_plugin.utils import console

PATHS = {
    'fast_fp32': ('fast', {}),
    'fast_fp32_checkpoint': ('fast', {'checkpoint': True}),
    'fast_bf16_channels_last': ('fast', {'bf16': True, 'channels_last': True}),
}


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def step(net, x, gt, speed):
    x = train_speed.prepare_input(x.clone(), speed).requires_grad_(True)
    with train_speed.autocast_context(x.device, speed):
        out = net(x)
    F.l1_loss(out.float(), gt).backward()
    return out.detach().float(), x.grad.float(), {n: p.grad.float() for n, p in net.named_parameters()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--size', default='2x256', help='BATCHxSIDE')
    p.add_argument('--tiny', action='store_true', help='dim 8, one block per level (a quick CPU check)')
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    batch, side = (int(v) for v in args.size.split('x'))
    cfg = dict(dim=8, en_num_blocks=(1, 1, 1, 1), de_num_blocks=(1, 1, 1, 1), reduction_c=4) if args.tiny else {}
    torch.manual_seed(0)
    reference = ESDNet(attention='spikingjelly', **cfg).to(device).train()
    gen = torch.Generator(device='cpu').manual_seed(1)
    x = torch.rand(batch, 3, side, side, generator=gen).to(device)
    gt = (x + 0.05 * torch.randn(x.shape, generator=gen).to(device)).clamp(0, 1)
    ref_out, ref_gx, ref_g = step(reference, x, gt, {})
    for name, (attention, speed) in PATHS.items():
        net = ESDNet(attention=attention, **cfg).to(device).train()
        net.load_state_dict(copy.deepcopy(reference.state_dict()))
        train_speed.prepare_model(net, speed)
        out, gx, g = step(net, x, gt, speed)
        errors = [rel(g[k], ref_g[k]) for k in ref_g if ref_g[k].abs().sum() > 0]
        console.info(json.dumps({'path': name, 'device': str(device), 'batch': batch, 'size': side,
                                 'output_rel_err': rel(out, ref_out), 'input_grad_rel_err': rel(gx, ref_gx),
                                 'param_grad_rel_err_median': statistics.median(errors),
                                 'param_grad_rel_err_max': max(errors)}))
        del net


if __name__ == '__main__':
    main(sys.argv[1:])
