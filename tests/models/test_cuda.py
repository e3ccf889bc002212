"""CUDA-only checks (skipped without a GPU): bf16 keeps neuron state fp32 with the fused LIF kernel, compile equals
eager, the fast attention equals spikingjelly's, block checkpointing and the teacher's CUDA graph equal the plain
path, and one DDP training step over NCCL."""
import copy
import os

import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')

import spikerir_plugin  # noqa: E402,F401
from basicsr.archs import build_network  # noqa: E402
from basicsr.models import build_model  # noqa: E402
from spikingjelly.activation_based import layer  # noqa: E402
from spikingjelly.activation_based.neuron.base_node import BaseNode  # noqa: E402

from spikerir_plugin.archs.spiking_blocks import FastMultiDimensionalAttention  # noqa: E402
from spikerir_plugin.models import speed as train_speed  # noqa: E402

CUDA = torch.device('cuda')
TINY_STUDENT = {'type': 'SpikerIR', 'preset': 'tiny', 'T': 4}
TINY_TEACHER = {'type': 'NAFNet', 'width': 8, 'middle_blk_num': 1, 'enc_blk_nums': [1, 1, 1],
                'dec_blk_nums': [1, 1, 1]}


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


@pytest.fixture(autouse=True)
def exact_matmuls():
    """TF32 off, so fp32 comparisons compare the same arithmetic."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def test_bf16_keeps_neuron_state_fp32_and_uses_the_fused_lif():
    info, fused = train_speed.check_fused_lif(CUDA)
    assert fused, f'spikingjelly picked an unfused LIF on CUDA: {info}'
    torch.manual_seed(0)
    net = build_network(dict(TINY_STUDENT)).to(CUDA).train()
    train_speed.prepare_model(net, {'bf16': True, 'channels_last': True})
    seen = set()
    for m in net.modules():
        if isinstance(m, BaseNode):
            m.register_forward_hook(lambda mod, args, out: seen.add((args[0].dtype, out.dtype)))
    x = torch.rand(2, 3, 64, 64, device=CUDA)
    with train_speed.autocast_context(CUDA, {'bf16': True}):
        out = net(train_speed.prepare_input(x, {'channels_last': True}))
    assert {d for d, _ in seen} == {torch.float32}
    out.float().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_compile_equals_eager():
    torch.manual_seed(0)
    net = build_network(dict(TINY_STUDENT, enc_blocks=[1, 0, 0], dec_blocks=[0, 0, 1])).to(CUDA).train()
    twin = copy.deepcopy(net)
    compiled = train_speed.maybe_compile(twin, {'compile': True})
    x, gt = torch.rand(2, 3, 32, 32, device=CUDA), torch.rand(2, 3, 32, 32, device=CUDA)
    for step in range(2):  # the second call reuses the compiled graph
        a, b = net(x), compiled(x)
        F.l1_loss(a, gt).backward()
        F.l1_loss(b, gt).backward()
        assert rel_err(b, a) < 1e-5, step
    for (name, p), q in zip(net.named_parameters(), twin.parameters()):
        assert rel_err(q.grad, p.grad) < 1e-4, name


def test_fast_attention_equals_spikingjelly():
    torch.manual_seed(0)
    ref = layer.MultiDimensionalAttention(T=4, C=32, reduction_t=4, reduction_c=16, kernel_size=3).to(CUDA)
    ours = FastMultiDimensionalAttention(T=4, C=32, reduction_t=4, reduction_c=16, kernel_size=3).to(CUDA)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(4, 2, 32, 40, 24, device=CUDA)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = ref(xa), ours(xb)
    weight = torch.randn_like(ya)
    (ya * weight).sum().backward()
    (yb * weight).sum().backward()
    assert rel_err(yb, ya) < 1e-6
    assert rel_err(xb.grad, xa.grad) < 1e-5
    for (name, p), q in zip(ref.named_parameters(), ours.parameters()):
        assert rel_err(q.grad, p.grad) < 1e-4, name


def test_block_checkpointing_equals_the_plain_step():
    torch.manual_seed(0)
    plain = build_network({'type': 'ESDNet', 'dim': 16, 'en_num_blocks': [1, 1, 1, 1],
                           'de_num_blocks': [1, 1, 1, 1]}).to(CUDA).train()
    recomputed = copy.deepcopy(plain)
    train_speed.prepare_model(recomputed, {'checkpoint': True})
    x, gt = torch.rand(2, 3, 64, 64, device=CUDA), torch.rand(2, 3, 64, 64, device=CUDA)
    for net in (plain, recomputed):
        F.l1_loss(net(x), gt).backward()
    for (name, p), q in zip(plain.named_parameters(), recomputed.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-5, atol=1e-7), name
    for (name, a), b in zip(plain.state_dict().items(), recomputed.state_dict().values()):
        assert torch.equal(a, b), name


def _distill_options(tmp_path, speed):
    torch.manual_seed(1)
    ckpt = tmp_path / 'teacher.pth'
    torch.save({'params': build_network(dict(TINY_TEACHER)).state_dict()}, ckpt)
    return {'name': 'cuda', 'model_type': 'SpikerIRDistillModel', 'is_train': True, 'dist': False, 'rank': 0,
            'world_size': 1, 'num_gpu': 1, 'scale': 1, 'network_g': dict(TINY_STUDENT),
            'network_t': dict(TINY_TEACHER), 'speed': speed,
            'path': {'models': str(tmp_path), 'training_states': str(tmp_path), 'pretrain_network_t': str(ckpt)},
            'train': {'optim_g': {'type': 'AdamW', 'lr': 1e-3}, 'pixel_opt': {'type': 'L1Loss'},
                      'hint_opt': {'type': 'HintLoss'}, 'kd_opt': {'type': 'L1Loss'}, 'hint_probe_size': 32,
                      'kd_schedule': {'type': 'constant', 'start': 0.12}}}


def test_teacher_cuda_graph_equals_the_eager_teacher(tmp_path):
    model = build_model(_distill_options(tmp_path, {'teacher_cuda_graph': True, 'teacher_bf16': True}))
    assert isinstance(model._teacher_forward, train_speed.GraphedForward)
    for seed in (0, 1):  # the second batch is copied into the captured input and replayed
        torch.manual_seed(seed)
        x = torch.rand(2, 3, 32, 32, device=CUDA)
        out, feats = model._teacher_forward(x)
        out, feats = out.clone(), [f.clone() for f in feats]
        ref_out, ref_feats = model.teacher_outputs(x)
        assert torch.equal(out, ref_out) and all(torch.equal(a, b) for a, b in zip(feats, ref_feats))
    model.feed_data({'lq': x, 'gt': x})
    model.optimize_parameters(1)
    assert torch.isfinite(model._step_losses['l_total'])


def test_one_ddp_step_over_nccl(tmp_path):
    import torch.distributed as dist
    dist.init_process_group('nccl', init_method=f'file://{tmp_path / "rendezvous"}', rank=0, world_size=1)
    try:
        opt = _distill_options(tmp_path, {'bf16': True})
        opt.update(dist=True)
        model = build_model(opt)
        assert type(model.net_g).__name__ == 'DistributedDataParallel'
        x = torch.rand(2, 3, 32, 32, device=CUDA)
        before = [p.detach().clone() for p in model.bare_net_g().parameters()]
        model.feed_data({'lq': x, 'gt': x})
        model.optimize_parameters(1)
        log = model.get_current_log()  # reduced over the (one-rank) group
        assert all(torch.isfinite(torch.tensor(v)) for v in log.values())
        assert any(not torch.equal(a, b) for a, b in zip(before, model.bare_net_g().parameters()))
    finally:
        dist.destroy_process_group()
        os.environ.pop('MASTER_ADDR', None)
