"""The zoo archs VLIF and SpikeRain: official layouts and outputs, the multi-level neuron, statelessness, inference
copies, energy counting of multi-level spikes, training through SpikingSRModel, restore and the energy command.

VLIF is checked against the official model.py (MIT), kept in tests/reference/. SpikeRain's repository has no
license, so its layout is written down here (one block's keys and shapes, a digest of the whole list) and its
outputs were computed once with the official model/spikeRain.py + model/subModules.py (inzamamulDU/SpikeRain at
a2c85ec, run outside this repository with the same deterministic weights and input as below) and recorded."""
import hashlib
import json
import math
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml
from spikingjelly.activation_based import functional, layer
from spikingjelly.activation_based.neuron import BaseNode
from torch import nn

import spikerir_plugin  # noqa: F401  (registers archs, losses, models)
from basicsr.archs import build_network
from basicsr.models import build_model
from spikerir_plugin.archs.neurons import MultiLevelSpikeNode, check_stateless
from spikerir_plugin.archs.spikerain_arch import SpikeRain
from spikerir_plugin.archs.spiking_blocks import FastMultiDimensionalAttention, make_neuron
from spikerir_plugin.archs.vlif_arch import VLIF, PixelShuffleLIF
from spikerir_plugin.models.feature_hints import declared_hint_layers
from spikerir_plugin.utils.snn import with_batch_statistics
from spikerir_plugin.inference import tiled_forward
from spikerir_plugin.tools.energy_report import measure_energy
from spikerir_plugin.inference import inference_network
from spikerir_plugin.inference.layers import InferenceAttention
from conftest import REFERENCE_DIR

sys.path.insert(0, REFERENCE_DIR)
import vlif_model as official_vlif  # noqa: E402  (MIT; see tests/reference/LICENSE.VLIF)

pytestmark = pytest.mark.usefixtures('one_thread')

TINY_VLIF = dict(dim=8, en_num_blocks=[1, 1, 1, 1], de_num_blocks=[1, 1, 1, 1], T=2, reduction_t=2, reduction_c=4)
TINY_SPIKERAIN = dict(dim=8, en_num_blocks=[1, 1, 1, 1], de_num_blocks=[1, 1, 1, 1], T=2, growth_rate=4,
                      dense_layers=2, reduction_c=4)
TINY = {'VLIF': TINY_VLIF, 'SpikeRain': TINY_SPIKERAIN}


def deterministic_state(state, seed=1):
    """Weights from a seeded generator in sorted key order (independent of construction order), scaled so that
    the neurons fire: the weights the recorded SpikeRain outputs were computed with."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k in sorted(state):
        v = state[k]
        if not v.is_floating_point():
            out[k] = v.clone()
        elif k.endswith('running_var'):
            out[k] = 0.5 + torch.rand(v.shape, generator=g)
        elif k.endswith('running_mean'):
            out[k] = 0.1 * torch.randn(v.shape, generator=g)
        elif v.dim() >= 2:
            out[k] = 1.5 * torch.randn(v.shape, generator=g) / math.sqrt(v[0].numel())
        elif k.endswith('bn.weight'):
            out[k] = 1 + 0.1 * torch.randn(v.shape, generator=g)
        else:
            out[k] = 0.1 * torch.randn(v.shape, generator=g)
    return out


def image(h, w, seed=0):
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------------------- VLIF
@pytest.mark.parametrize('use_refinement', [False, True])
def test_vlif_released_layout_equals_the_official_model(use_refinement):
    with torch.device('meta'):  # the released size, without allocating or initialising 14M parameters
        official, ours = official_vlif.model(use_refinement), build_network({'type': 'VLIF',
                                                                            'use_refinement': use_refinement})
    ref, mine = official.state_dict(), ours.state_dict()
    assert list(mine) == list(ref)
    assert all(mine[k].shape == ref[k].shape for k in ref)
    assert sum(p.numel() for p in ours.parameters()) == (14_312_031 if use_refinement else 14_023_911)


@pytest.mark.parametrize('attention', ['spikingjelly', 'fast'])
def test_vlif_outputs_and_gradients_equal_the_official_model(attention):
    """The official net at T=4 (its hard-coded attention size) and dim 16 (its reduction 16), with perturbed
    weights, train and eval mode. With spikingjelly's attention module the outputs are the same bits; the fast
    attention gives the same outputs up to float rounding and shares a max's gradient differently among exactly
    tied maxima (frequent on spike maps), so only the first set of gradients is compared tightly."""
    cfg = dict(dim=16, en_num_blocks=[1, 1, 1, 1], de_num_blocks=[1, 1, 1, 1], T=4, use_refinement=True)
    official = official_vlif.VLIFNet(**cfg)
    functional.set_step_mode(official, 'm')  # what the official train.py / test.py do after building it
    ours = VLIF(attention=attention, **cfg)
    state = deterministic_state(official.state_dict())
    official.load_state_dict(state)
    ours.load_state_dict(state, strict=True)
    x = image(16, 24, seed=3)
    for mode in ('train', 'eval'):
        official.train(mode == 'train')
        ours.train(mode == 'train')
        with torch.no_grad():
            expected = official(x)
            functional.reset_net(official)
            got = ours(x)
        if attention == 'spikingjelly':
            assert torch.equal(got, expected)
        else:  # other rounding: a membrane within it of the threshold may flip a spike and move a few pixels
            assert float(((got - expected).abs() <= 1e-5).double().mean()) > 0.99
    if attention == 'spikingjelly':
        official.train()
        ours.train()
        official(x).square().mean().backward()
        ours(x).square().mean().backward()
        grads = dict(official.named_parameters())
        for name, p in ours.named_parameters():
            torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-3, atol=1e-3 * grads[name].grad.abs().max())


@pytest.mark.parametrize('form', ['model_best', 'model_last'])
def test_vlif_loads_checkpoints_saved_by_the_official_train_py(form, tmp_path):
    """The official train.py saves model_best.pth as a raw (DataParallel: 'module.'-prefixed) state dict and
    model_last.pth as {'epoch', 'state_dict', 'optimizer'}: both load strictly through path.pretrain_network_g."""
    cfg = dict(dim=16, en_num_blocks=[1, 1, 1, 1], de_num_blocks=[1, 1, 1, 1], T=4)
    official = official_vlif.VLIFNet(**cfg)
    functional.set_step_mode(official, 'm')
    official.load_state_dict(deterministic_state(official.state_dict()))
    state = {f'module.{k}': v for k, v in official.state_dict().items()}
    if form == 'model_last':
        optimizer = torch.optim.Adam(official.parameters())
        state = {'epoch': 50, 'state_dict': official.state_dict(), 'optimizer': optimizer.state_dict()}
    torch.save(state, tmp_path / f'{form}.pth')
    opt = {'name': 'zoo_vlif_official', 'model_type': 'SpikingSRModel', 'num_gpu': 0, 'is_train': False,
           'dist': False, 'rank': 0, 'world_size': 1, 'scale': 1,
           'network_g': dict(cfg, type='VLIF', attention='spikingjelly'),
           'path': {'pretrain_network_g': str(tmp_path / f'{form}.pth'), 'strict_load_g': True,
                    'param_key_g': 'state_dict' if form == 'model_last' else None}}
    model = build_model(opt)
    x = image(16, 16, seed=7)
    with torch.no_grad():
        expected = official.eval()(x)
        got = model.net_g.eval()(x)
    assert torch.equal(got, expected)


def test_multi_level_neuron_equals_the_official_mem_update():
    x = (torch.randn(8, 2, 3, 5, 5) * 2).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    ours, ref = MultiLevelSpikeNode(levels=4, decay=0.25), official_vlif.mem_update()
    s, s_ref = ours(x), ref(x_ref)
    assert torch.equal(s, s_ref)
    assert set((s * 4).unique().tolist()) == {0.0, 1.0, 2.0, 3.0, 4.0}
    w = torch.randn_like(s)
    (s * w).sum().backward()
    (s_ref * w).sum().backward()
    assert torch.equal(x.grad, x_ref.grad)
    assert torch.equal(ours(x), s)  # no state: the same again
    # the dynamics written out: v_t = (v_{t-1} - s_{t-1}) * 0.25 + x_t, s_t = round(clamp(v_t, 0, 4)) / 4
    v, prev = torch.zeros_like(x[0]), torch.zeros_like(x[0])
    for t in range(x.shape[0]):
        v = (v - prev) * 0.25 + x[t].detach()
        prev = torch.round(torch.clamp(v, 0, 4)) / 4
        assert torch.equal(s[t], prev)


def test_vlif_channel_mix_before_upsampling_is_the_same_function():
    """adjust_before_upsample: the visual LIF's 1x1 conv before the bilinear upsampling instead of after (both
    linear), so the conv reads the multi-level spikes; the same outputs up to rounding, same parameters."""
    official, moved = PixelShuffleLIF(6), PixelShuffleLIF(6, adjust_before_upsample=True)
    moved.load_state_dict(official.state_dict(), strict=True)
    x = torch.randn(3, 2, 6, 10, 14) * 2
    torch.testing.assert_close(moved(x), official(x), rtol=1e-5, atol=1e-6)
    seen = []
    moved.channel_adjust.register_forward_pre_hook(lambda m, inp: seen.append(inp[0]))
    moved(x)
    assert seen[0].shape[-2:] == (5, 7) and torch.equal((seen[0] * 4).round(), seen[0] * 4)


# ---------------------------------------------------------------------------------------------------- SpikeRain
SPIKERAIN_M_KEYS = 770
SPIKERAIN_M_DIGEST = '54e94c3119604aa67b7f66c8683e6833c0eccece58c6981322acde567436e11a'  # sha256 of 'key shape' lines
SPIKERAIN_BLOCK = """\
layers.0.1.weight (24, 48, 3, 3)
layers.0.2.bn.weight (24,)
layers.0.2.bn.bias (24,)
layers.0.2.bn.running_mean (24,)
layers.0.2.bn.running_var (24,)
layers.0.2.bn.num_batches_tracked ()
layers.1.1.weight (24, 72, 3, 3)
layers.1.2.bn.weight (24,)
layers.1.2.bn.bias (24,)
layers.1.2.bn.running_mean (24,)
layers.1.2.bn.running_var (24,)
layers.1.2.bn.num_batches_tracked ()
layers.2.1.weight (24, 96, 3, 3)
layers.2.2.bn.weight (24,)
layers.2.2.bn.bias (24,)
layers.2.2.bn.running_mean (24,)
layers.2.2.bn.running_var (24,)
layers.2.2.bn.num_batches_tracked ()
layers.3.1.weight (24, 120, 3, 3)
layers.3.2.bn.weight (24,)
layers.3.2.bn.bias (24,)
layers.3.2.bn.running_mean (24,)
layers.3.2.bn.running_var (24,)
layers.3.2.bn.num_batches_tracked ()
lff.1.weight (48, 144, 1, 1)
attn.temporal_fc.1.weight (1, 1, 1, 1, 1)
attn.temporal_fc.1.bias (1,)
attn.channel_fc.1.weight (3, 48, 1, 1, 1)
attn.channel_fc.1.bias (3,)
attn.channel_fc.3.weight (48, 3, 1, 1, 1)
attn.channel_fc.3.bias (48,)
attn.spatial_conv.0.weight (1, 1, 1, 3, 3)
attn.spatial_conv.0.bias (1,)"""
SPIKERAIN_OUTSIDE_BLOCKS = """\
patch_embed.proj.weight (48, 3, 3, 3)
downsample_1_to_2.maxpool_conv.1.weight (96, 48, 3, 3)
downsample_2_to_3.maxpool_conv.1.weight (192, 96, 3, 3)
upsample_3_to_2.up.1.weight (96, 192, 3, 3)
reduce_channels_2.1.weight (96, 192, 1, 1)
upsample_2_to_1.up.1.weight (48, 96, 3, 3)
temporal_fusion.weights (4,)
refinement.ca.1.weight (12, 96, 1, 1)
refinement.ca.1.bias (12,)
refinement.ca.3.weight (96, 12, 1, 1)
refinement.ca.3.bias (96,)
refinement.sa.0.weight (12, 96, 1, 1)
refinement.sa.0.bias (12,)
refinement.sa.2.weight (1, 12, 5, 5)
refinement.sa.2.bias (1,)
refinement.gate.0.weight (96, 288, 1, 1)
refinement.gate.0.bias (96,)
output_conv.weight (3, 96, 3, 3)
output_conv.bias (3,)"""
# The official net (dim 16, blocks 1/1/1, T=4) with deterministic_state() weights on image(16, 24, seed=2):
# eval: mean, std, sum |y|, y.flatten()[::181][:6]; train (batch statistics): mean, std. Its LIFs fire at ~0.44.
# Ours gave the same to 1e-7 relative; the tolerances below leave room for a spike that another CPU's rounding
# flips (it moves a few pixels by up to a few 1e-2) and still fail on any change of the network.
SPIKERAIN_EVAL = (-0.544822468868612, 1.3984990846871252, 1480.1535777971148)
SPIKERAIN_EVAL_SAMPLES = (-1.7060420513153076, -2.0738821029663086, -0.6935755014419556, -2.6709909439086914,
                          -3.0439319610595703, 1.1543325185775757)
SPIKERAIN_TRAIN = (-0.6909612288776165, 1.6425614038485472)


def test_spikerain_published_layout_is_the_official_one():
    with torch.device('meta'):
        net = build_network({'type': 'SpikeRain'})  # defaults: SpikeRain-M, T=4
    lines = [f'{k} {tuple(v.shape)}' for k, v in net.state_dict().items()]
    assert len(lines) == SPIKERAIN_M_KEYS
    assert hashlib.sha256('\n'.join(lines).encode()).hexdigest() == SPIKERAIN_M_DIGEST
    block = [line[len('encoder_level1.0.'):] for line in lines if line.startswith('encoder_level1.0.')]
    assert block == SPIKERAIN_BLOCK.splitlines()
    outside = [line for line in lines if not line.startswith(('encoder_level', 'decoder_level'))
               and '.bn.' not in line]
    assert outside == SPIKERAIN_OUTSIDE_BLOCKS.splitlines()
    assert sum(p.numel() for p in net.parameters()) == 4_434_392
    with torch.device('meta'):
        sizes = {v: sum(p.numel() for p in SpikeRain(preset=v).parameters()) for v in 'SL'}
    assert sizes == {'S': 1_589_888, 'L': 8_048_576}  # the official factory's S and L


def test_spikerain_outputs_equal_the_recorded_official_outputs():
    net = SpikeRain(dim=16, en_num_blocks=[1, 1, 1, 1], de_num_blocks=[1, 1, 1, 1], T=4)
    net.load_state_dict(deterministic_state(net.state_dict()), strict=True)
    x = image(16, 24, seed=2)
    with torch.no_grad():
        y = net.eval()(x).double()
        stats = (float(y.mean()), float(y.std()), float(y.abs().sum()))
        np.testing.assert_allclose(stats, SPIKERAIN_EVAL, rtol=1e-4)
        np.testing.assert_allclose(y.flatten()[::181][:6].numpy(), SPIKERAIN_EVAL_SAMPLES, rtol=0, atol=5e-2)
        y = net.train()(x).double()
        np.testing.assert_allclose((float(y.mean()), float(y.std())), SPIKERAIN_TRAIN, rtol=1e-4)


def test_spikerain_rate_twin_has_the_spiking_layout_and_no_spikes():
    spiking, twin = SpikeRain(neuron='lif', **TINY_SPIKERAIN), SpikeRain(neuron='rate', **TINY_SPIKERAIN)
    assert {k: v.shape for k, v in twin.state_dict().items()} == {k: v.shape for k, v in spiking.state_dict().items()}
    x = image(16, 16)
    with_batch_statistics(spiking, x)
    twin.load_state_dict(spiking.state_dict(), strict=True)
    with torch.no_grad():
        out, spiking_out = twin.eval()(x), spiking(x)
    assert torch.isfinite(out).all() and not torch.equal(out, spiking_out)
    assert not any(isinstance(m, BaseNode) for m in twin.modules())
    assert any(isinstance(m, BaseNode) for m in spiking.modules())
    with pytest.raises(ValueError, match='neuron'):
        SpikeRain(neuron='if', **TINY_SPIKERAIN)


# ------------------------------------------------------------------------------------------------ both archs
@pytest.mark.parametrize('arch', TINY)
def test_stateless_any_size_any_T_and_hint_levels(arch):
    net = build_network(dict(TINY[arch], type=arch))
    x = image(13, 21)  # not a multiple of the nets' downsampling: padded and cropped back
    with_batch_statistics(net, image(16, 24, seed=5))
    with torch.no_grad():
        first = net(x)
        net(image(13, 21, seed=9))  # another input in between changes nothing
        assert torch.equal(net(x), first) and first.shape == x.shape
    check_stateless(net)
    names = dict(net.named_modules())
    hints = declared_hint_layers(net)
    assert len(hints) == 3 and all(h in names for h in hints)
    shapes = {}
    def keep_shape(name):
        def hook(_module, _inputs, output):
            shapes[name] = output.shape
        return hook

    handles = [names[h].register_forward_hook(keep_shape(h)) for h in hints]
    with torch.no_grad():
        net(image(16, 24))
    for h in handles:
        h.remove()
    assert [s[-1] for s in (shapes[h] for h in hints)] == [6, 12, 24]  # coarse to fine
    three = build_network(dict(TINY[arch], type=arch, T=3, **({'reduction_t': 3} if arch == 'VLIF' else {})))
    with torch.no_grad():
        assert three.eval()(x).shape == x.shape


@pytest.mark.parametrize('arch', TINY)
def test_inference_copies(arch):
    """exact=True: the same bits as eval mode. exact=False: VLIF's multi-level neurons stay float tensors read by
    dense convolutions (no spike tables, which pack binary spikes); close to eval either way."""
    net = with_batch_statistics(build_network(dict(TINY[arch], type=arch, **({'adjust_before_upsample': True}
                                                             if arch == 'VLIF' else {}))), image(32, 32, seed=4))
    x = image(32, 32)
    with torch.no_grad():
        expected = net(x)
        exact = inference_network(net, exact=True)
        assert torch.equal(exact(x), expected)
        fast = inference_network(net, exact=False)
        diff = (fast(x) - expected).abs()
    assert float(diff.mean()) < 1e-3
    assert not net.training
    if arch == 'VLIF':
        neurons = [m for m in fast.modules() if isinstance(m, MultiLevelSpikeNode)]
        assert len(neurons) == len([m for m in net.modules() if isinstance(m, MultiLevelSpikeNode)]) > 0
        assert all(getattr(m, 'spike_table', None) is None for m in fast.modules())
        # VLIF adds its residuals after a plain attn(y) call: its attentions are not fused with a residual
        for copy_ in (exact, fast):
            assert not any(isinstance(m, InferenceAttention) for m in copy_.modules())
            assert sum(isinstance(m, FastMultiDimensionalAttention) for m in copy_.modules()) == \
                sum(isinstance(m, FastMultiDimensionalAttention) for m in net.modules()) > 0
        assert float(((fast(x) - expected).abs() <= 1e-4).double().mean()) > 0.99  # up to rare flipped spikes


def test_energy_counts_a_level_k_spike_as_k_accumulates():
    """A level-k spike: k SynOps per weight it reaches; binary LIF spikes in the same net: one each."""
    torch.manual_seed(0)
    net = nn.Sequential(MultiLevelSpikeNode(levels=4), layer.Conv2d(3, 5, 3, padding=1, bias=False, step_mode='m'))
    binary = nn.Sequential(make_neuron('lif'), layer.Conv2d(3, 5, 3, padding=1, bias=False, step_mode='m'))

    class Wrap(nn.Module):
        T = 4

        def __init__(self):
            super().__init__()
            self.body, self.binary = net, binary

        def forward(self, x):
            seq = x.unsqueeze(0).repeat(4, 1, 1, 1, 1)
            return (self.body(seq * 3) + self.binary(seq)).mean(0)

    x = image(6, 7)
    res = measure_energy(Wrap(), inputs=x)
    seq = x.unsqueeze(0).repeat(4, 1, 1, 1, 1)
    spikes, lif_spikes = net[0](seq * 3), binary[0](seq)
    k = (spikes * 4).round()
    assert set(k.unique().tolist()) > {0.0, 1.0, 4.0}
    ones = torch.ones(5, 3, 3, 3, dtype=torch.float64)
    reached = int(torch.nn.functional.conv2d(k.flatten(0, 1).double(), ones, padding=1).sum())
    lif_reached = int(torch.nn.functional.conv2d(lif_spikes.flatten(0, 1).double(), ones, padding=1).sum())
    assert 0 < lif_reached
    rows = {r['name']: r for r in res['layers']}
    assert rows['body.1']['kind'] == 'SynOp' and rows['body.1']['macs'] == 0 and rows['body.1']['synops'] == reached
    assert rows['binary.1']['kind'] == 'SynOp' and rows['binary.1']['synops'] == lif_reached
    assert res['totals']['synops'] == reached + lif_reached and res['totals']['macs'] == 0
    occupancy = torch.bincount(k.long().flatten(), minlength=5).double() / k.numel()
    np.testing.assert_allclose(res['neuron_levels']['body.0'], occupancy.numpy())
    assert res['neurons']['body.0'] == pytest.approx(float(spikes.double().mean()))
    assert 'k accumulates' in res['convention']['text']


def test_vlif_energy_report_shows_levels_and_spike_driven_channel_mix():
    net = with_batch_statistics(VLIF(adjust_before_upsample=True, **TINY_VLIF), image(32, 32, seed=4))
    res = measure_energy(net, inputs=image(32, 32))
    rows = {r['name']: r for r in res['layers']}
    mixes = [r for n, r in rows.items() if n.endswith('lif_2.channel_adjust')]
    assert mixes and all(r['kind'] in ('SynOp', 'silent') for r in mixes) and any(r['synops'] for r in mixes)
    assert rows['encoder_level1.initial_residual.conv1']['kind'] == 'MAC'  # reads a * s + b * (x - s) + x * s
    levels = res['neuron_levels']
    assert 'encoder_level1.lif_node' in levels and len(levels['encoder_level1.lif_node']) == 5
    assert any(v[0] < 1 for v in levels.values())
    assert all(abs(sum(v) - 1) < 1e-9 for v in levels.values())


# --------------------------------------------------------------------------------------- training and tools
@pytest.mark.parametrize('arch', TINY)
def test_trains_through_spiking_sr_model_and_tiles(arch, tmp_path):
    opt = {'name': f'zoo_{arch}', 'model_type': 'SpikingSRModel', 'num_gpu': 0, 'is_train': True, 'dist': False,
           'rank': 0, 'world_size': 1, 'scale': 1, 'network_g': dict(TINY[arch], type=arch),
           'path': {'models': str(tmp_path), 'training_states': str(tmp_path), 'visualization': str(tmp_path)},
           'train': {'optim_g': {'type': 'AdamW', 'lr': 2e-3}, 'pixel_opt': {'type': 'L1Loss'},
                     'scheduler': {'type': 'MultiStepLR', 'milestones': [1000], 'gamma': 0.5}}}
    torch.manual_seed(0)
    model = build_model(opt)
    before = {k: v.clone() for k, v in model.net_g.state_dict().items()}
    gt = image(24, 24, seed=1).repeat(2, 1, 1, 1)
    lq = (gt + 0.1 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    for it in (1, 2):
        model.feed_data({'lq': lq, 'gt': gt})
        model.optimize_parameters(it)
        assert math.isfinite(model.get_current_log()['l_pix'])
    after = model.net_g.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())
    net = model.net_g
    x = image(40, 28, seed=2)
    with torch.no_grad():
        whole = inference_network(net)(x)
        assert torch.equal(tiled_forward(inference_network(net), x, 48, 8), whole)  # one tile: whole image
        tiled = tiled_forward(inference_network(net), x, 24, 8)
    assert tiled.shape == whole.shape and torch.isfinite(tiled).all()


@pytest.mark.parametrize('arch', TINY)
def test_activation_checkpointing_changes_nothing_but_memory(arch):
    """speed.checkpoint sets activation_checkpoint on the residual blocks: the same loss, gradients and batch-norm
    statistics (the recomputation does not count the batch twice)."""
    x = image(24, 24, seed=8)
    results = []
    for on in (False, True):
        torch.manual_seed(0)
        net = build_network(dict(TINY[arch], type=arch)).train()
        blocks = [m for m in net.modules() if hasattr(m, 'activation_checkpoint')]
        assert blocks
        for m in blocks:
            m.activation_checkpoint = on
        calls = []
        first_conv = next(m for m in blocks[0].modules() if isinstance(m, nn.Conv2d))
        first_conv.register_forward_hook(lambda *_: calls.append(None))
        net(x).square().mean().backward()
        assert len(calls) == (2 if on else 1)  # recomputed in backward
        results.append(({n: p.grad for n, p in net.named_parameters()}, {n: b.clone() for n, b in net.named_buffers()}))
    (grads, buffers), (grads_ckpt, buffers_ckpt) = results
    for name in grads:
        torch.testing.assert_close(grads_ckpt[name], grads[name], rtol=0, atol=0)
    for name in buffers:
        assert torch.equal(buffers_ckpt[name], buffers[name]), name


@pytest.mark.parametrize('arch', TINY)
def test_restore_and_energy_commands(arch, tmp_path, capsys):
    from spikerir_plugin.tools import energy_report, restore
    net = with_batch_statistics(build_network(dict(TINY[arch], type=arch)), image(32, 32, seed=4))
    ckpt = tmp_path / 'net.pth'
    torch.save({'params': net.state_dict()}, ckpt)
    src = tmp_path / 'in'
    src.mkdir()
    photo = (image(30, 38, seed=6)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    cv2.imwrite(str(src / 'rain.png'), photo[..., ::-1])
    rc = restore.main(['-i', str(src / 'rain.png'), '-o', str(tmp_path / 'out'), '--arch', arch, '--arch-args',
                       yaml.safe_dump(dict(TINY[arch]), default_flow_style=True).strip(), '--ckpt', str(ckpt),
                       '--device', 'cpu'])
    assert rc == 0
    restored = cv2.imread(str(tmp_path / 'out' / 'rain.png'))
    x = torch.from_numpy(photo.astype(np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        expected = (inference_network(net)(x).clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255).round()
    np.testing.assert_array_equal(restored[..., ::-1], expected)

    yml = tmp_path / 'energy.yml'
    yml.write_text(yaml.safe_dump({'name': f'zoo_{arch}', 'network_g': dict(TINY[arch], type=arch),
                                   'path': {'pretrain_network_g': str(ckpt)}}))
    assert energy_report.main(['-opt', str(yml), '--size', '32', '--out', str(tmp_path / 'energy')]) == 0
    report = json.loads((tmp_path / 'energy' / 'energy.json').read_text())['student']
    assert report['spiking'] and report['T'] == 2 and report['totals']['energy_mJ'] > 0
    assert bool(report['neuron_levels']) == (arch == 'VLIF')
    if arch == 'VLIF':
        assert 'level occupancy' in capsys.readouterr().out


@pytest.mark.parametrize('arch', TINY)
def test_distils_through_spikerir_distill_model(arch, tmp_path):
    """SpikeRain: the twin recipe (its rate twin teaches it, layer for layer, and initialises it). VLIF has no
    rate twin: an ANN teacher (NAFNet) with the default hint pairing of both archs' declared levels."""
    if arch == 'SpikeRain':
        teacher_opt = dict(TINY_SPIKERAIN, type='SpikeRain', neuron='rate')
        extra = {'init_from_teacher': True, 'hint_adapter': 'identity'}
    else:
        teacher_opt = {'type': 'NAFNet', 'width': 8, 'middle_blk_num': 1, 'enc_blk_nums': [1, 1, 1],
                       'dec_blk_nums': [1, 1, 1]}
        extra = {}
    torch.manual_seed(1)
    teacher = build_network(dict(teacher_opt))
    torch.save({'params': teacher.state_dict()}, tmp_path / 'teacher.pth')
    opt = {'name': f'zoo_kd_{arch}', 'model_type': 'SpikerIRDistillModel', 'num_gpu': 0, 'is_train': True,
           'dist': False, 'rank': 0, 'world_size': 1, 'scale': 1, 'network_g': dict(TINY[arch], type=arch),
           'network_t': teacher_opt, 'val': {'tile': None},
           'path': {'models': str(tmp_path), 'training_states': str(tmp_path), 'visualization': str(tmp_path),
                    'pretrain_network_t': str(tmp_path / 'teacher.pth'), 'param_key_t': 'params',
                    'strict_load_t': True, 'ignore_resume_networks': ['network_t']},
           'train': dict({'optim_g': {'type': 'AdamW', 'lr': 2e-3}, 'pixel_opt': {'type': 'L1Loss'},
                          'scheduler': {'type': 'MultiStepLR', 'milestones': [1000], 'gamma': 0.5},
                          'hint_opt': {'type': 'HintLoss', 'criterion': 'mse'}, 'kd_opt': {'type': 'L1Loss'},
                          'kd_schedule': {'type': 'constant', 'start': 0.5}, 'hint_probe_size': 32}, **extra)}
    model = build_model(opt)
    if arch == 'SpikeRain':
        student = model.net_g.state_dict()
        assert all(torch.equal(student[k], v) for k, v in teacher.state_dict().items())
    gt = image(32, 32, seed=1).repeat(2, 1, 1, 1)
    model.feed_data({'lq': (gt * 0.9).clamp(0, 1), 'gt': gt})
    model.optimize_parameters(1)
    log = model.get_current_log()
    assert {'l_pix', 'l_hint', 'l_kd'} <= set(log) and all(math.isfinite(float(v)) for v in log.values())
