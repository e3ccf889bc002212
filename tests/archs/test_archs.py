"""Network architectures: shapes, spiking state, gradients, checkpoints, official key sets, fast attention, presets."""
import inspect

import pytest
import torch
import torch.nn.functional as F
from basicsr.models.base_model import BaseModel
from basicsr.utils.registry import ARCH_REGISTRY
from spikingjelly.activation_based import layer

import spikerir_plugin  # noqa: F401  (registers the archs)
from spikerir_plugin.archs import esdnet_arch, nafnet_arch, restormer_arch, spikerir_arch
from spikerir_plugin.archs.spiking_blocks import FastMultiDimensionalAttention, SpikingResidualBlock, UpSampling

# tiny configurations (CPU-fast) of every registered network
TINY = {
    'ESDNet': dict(dim=8, en_num_blocks=[1, 1, 1, 1], de_num_blocks=[1, 1, 1, 1], T=4, reduction_c=4),
    'SpikerIR': dict(T=2, reduction_t=2),
    'SpikerIR-if-noattn': dict(dim=4, neuron='if', attention='none', T=3),
    'SpikerIR-sj-attn': dict(dim=4, attention='spikingjelly', T=4, reduction_c=2),
    'SPIDEN': dict(width=8, depth=4, T=2),
    'NAFNet': dict(width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1]),
    'NAFNetLocal': dict(width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1], train_size=8),
    'Restormer': dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 1, 2, 2]),
}
SPIKING = [name for name in TINY if name.split('-')[0] in ('ESDNet', 'SpikerIR', 'SPIDEN')]


def build(name):
    torch.manual_seed(0)
    return ARCH_REGISTRY.get(name.split('-')[0])(**TINY[name])


def run(net, x):
    out = net(x)
    return out


def n_params(net):
    return sum(p.numel() for p in net.parameters())


def test_registry_lists_all_archs():
    assert {'ESDNet', 'SpikerIR', 'SPIDEN', 'NAFNet', 'NAFNetLocal', 'Restormer'} <= set(ARCH_REGISTRY._obj_map)


@pytest.mark.parametrize('name', TINY)
@pytest.mark.parametrize('size', [(17, 23), (3, 5)])
def test_forward_shape_any_size(name, size):
    net = build(name).eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        out = run(net, x)
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize('mode', ['eval', 'train'])
@pytest.mark.parametrize('name', SPIKING)
def test_output_depends_on_the_input_alone(name, mode):
    """Each call starts from resting neurons: the same input twice gives bit-identical outputs, whatever came
    between, and no neuron keeps a membrane potential after the call."""
    from spikingjelly.activation_based.neuron.base_node import BaseNode
    net = build(name)
    x, other = torch.rand(1, 3, 16, 20), torch.rand(2, 3, 12, 8) * 3
    if mode == 'eval':  # running statistics from a few batches, so that eval-mode activations reach threshold
        with torch.no_grad():
            for _ in range(3):
                net.train()(torch.rand(2, 3, 16, 20))
    getattr(net, mode)()
    with torch.no_grad():
        first = net(x)
        net(other)  # a different batch and size in between
        second = net(x)
    assert torch.equal(first, second)
    neurons = [m for m in net.modules() if isinstance(m, BaseNode)]
    assert neurons and all(isinstance(m.v, float) for m in neurons), 'a neuron kept state after the call'
    rates = []
    hooks = [m.register_forward_hook(lambda m, i, o: rates.append(o.mean().item())) for m in neurons]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    assert max(rates) > 0, 'no neuron fired: the identity check above would be vacuous'


@pytest.mark.parametrize('name', SPIKING)
def test_plain_pytorch_loop_trains(name):
    """loss.backward(); opt.step() three times, no reset anywhere (this crashed on the 2nd iteration with
    spikingjelly's stateful neurons: 'Trying to backward through the graph a second time')."""
    net = build(name).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.rand(2, 3, 16, 16)
    target = x.clamp(0.2, 0.8)
    losses = []
    for _ in range(3):
        loss = F.l1_loss(net(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] != losses[0]


@pytest.mark.parametrize('name', ['SpikerIR', 'ESDNet'])
def test_block_checkpointing_equals_the_plain_backward(name):
    """speed.checkpoint recomputes each residual block in backward: same loss, gradients and tdBN statistics."""
    from spikerir_plugin.models import speed as train_speed
    plain, recomputed = build(name).train(), build(name).train()
    train_speed.prepare_model(recomputed, {'checkpoint': True})
    assert sum(getattr(m, 'activation_checkpoint', False) for m in recomputed.modules()) >= 3
    x, gt = torch.rand(2, 3, 20, 16), torch.rand(2, 3, 20, 16)
    for net in (plain, recomputed):
        F.l1_loss(net(x), gt).backward()
    for (k, a), b in zip(plain.named_parameters(), recomputed.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-7, msg=k)
    for (k, a), b in zip(plain.state_dict().items(), recomputed.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize('name', TINY)
def test_gradients_reach_every_parameter(name):
    net = build(name).train()
    x = torch.rand(2, 3, 17, 23, requires_grad=True)
    loss = F.l1_loss(net(x), torch.rand(2, 3, 17, 23))
    loss.backward()
    missing = [k for k, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f'no/non-finite gradient for {missing}'
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize('name', TINY)
def test_basicsr_checkpoint_round_trip(name, tmp_path):
    """basicsr's own BaseModel.save_network / load_network(strict=True) give back identical outputs."""
    saver = BaseModel({'num_gpu': 0, 'is_train': False, 'dist': False, 'path': {'models': str(tmp_path)}})
    net = build(name)
    with torch.no_grad():  # move BN running statistics and parameters away from their initial values
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
        run(net.train(), torch.rand(2, 3, 12, 12))
    saver.save_network(net, 'net_g', 7)
    torch.manual_seed(123)
    loaded = ARCH_REGISTRY.get(name.split('-')[0])(**TINY[name])
    saver.load_network(loaded, str(tmp_path / 'net_g_7.pth'), strict=True)
    x = torch.rand(1, 3, 17, 23)
    with torch.no_grad():
        assert torch.equal(run(net.eval(), x), run(loaded.eval(), x))


# ---------------------------------------------------------------------------------------------- fast attention
@pytest.mark.parametrize('T,B,C,H,W,rt,rc,k,flags', [
    (4, 2, 16, 8, 8, 4, 16, 3, {}),
    (2, 1, 8, 5, 7, 2, 4, 7, {}),
    (6, 3, 32, 4, 6, 3, 8, 3, {}),
    (4, 2, 8, 6, 6, 4, 2, 3, dict(use_temporal=False)),
    (3, 2, 8, 6, 6, 1, 2, 3, dict(use_channel=False, use_spatial=False)),
])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_fast_attention_equals_spikingjelly(T, B, C, H, W, rt, rc, k, flags, dtype):
    torch.manual_seed(0)
    ref = layer.MultiDimensionalAttention(T, C, rt, rc, k, **flags).to(dtype)
    fast = FastMultiDimensionalAttention(T, C, rt, rc, k, **flags).to(dtype)
    assert {n: p.shape for n, p in ref.state_dict().items()} == {n: p.shape for n, p in fast.state_dict().items()}
    fast.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(T, B, C, H, W, dtype=dtype)
    x_ref, x_fast = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ref, out_fast = ref(x_ref), fast(x_fast)
    tol = dict(rtol=1e-9, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out_fast, out_ref, **tol)
    weight = torch.randn_like(out_ref)  # a loss that weights every output element differently
    (out_ref * weight).sum().backward()
    (out_fast * weight).sum().backward()
    torch.testing.assert_close(x_fast.grad, x_ref.grad, **tol)
    grads_ref = dict(ref.named_parameters())
    for n, p in fast.named_parameters():
        torch.testing.assert_close(p.grad, grads_ref[n].grad, **tol, msg=f'gradient of {n}')


def test_fast_attention_rejects_wrong_T():
    att = FastMultiDimensionalAttention(T=4, C=8, reduction_t=4, reduction_c=4)
    with pytest.raises(ValueError, match='T=4'):
        att(torch.rand(2, 1, 8, 4, 4))


def test_upsampling_interpolates_each_time_step():
    up = UpSampling(8).eval()
    x = torch.randn(3, 2, 8, 5, 6)
    per_step = torch.stack([F.interpolate(x[t], scale_factor=2, mode='bilinear') for t in range(3)])
    assert torch.equal(run(up, x), run(up.up, per_step))


# --------------------------------------------------------------------------------- official state_dict layouts
def official_esdnet_shapes(dim, en, de, T=4, rt=4, rc=16):
    """Key -> shape of MingTian99/ESDNet model.py's ESDNet, written from its module structure."""
    def bn(p, c):  # tdBN: a BatchNorm2d
        return {f'{p}.{n}': (c,) for n in ('weight', 'bias', 'running_mean', 'running_var')} | \
            {f'{p}.num_batches_tracked': ()}

    def srb(p, c):  # residual = [LIF, conv, tdBN, LIF, conv, tdBN]; shortcut = [conv, tdBN]; attn = MDA
        return {f'{p}.residual.1.weight': (c, c, 3, 3), **bn(f'{p}.residual.2', c),
                f'{p}.residual.4.weight': (c, c, 3, 3), **bn(f'{p}.residual.5', c),
                f'{p}.shortcut.0.weight': (c, c, 3, 3), **bn(f'{p}.shortcut.1', c),
                f'{p}.attn.ta.sharedMLP.0.weight': (T // rt, T, 1, 1, 1),
                f'{p}.attn.ta.sharedMLP.2.weight': (T, T // rt, 1, 1, 1),
                f'{p}.attn.ca.sharedMLP.0.weight': (c // rc, c, 1, 1, 1),
                f'{p}.attn.ca.sharedMLP.2.weight': (c, c // rc, 1, 1, 1),
                f'{p}.attn.sa.conv.weight': (1, 2, 3, 3)}

    def stage(p, c, n):
        return {k: v for i in range(n) for k, v in srb(f'{p}.{i}', c).items()}

    d = dim
    shapes = {'patch_embed.proj.weight': (d, 3, 3, 3), **stage('encoder_level1', d, en[0]),
              'down1_2.maxpool_conv.1.weight': (2 * d, d, 3, 3), **bn('down1_2.maxpool_conv.2', 2 * d),
              **stage('encoder_level2', 2 * d, en[1]),
              'down2_3.maxpool_conv.1.weight': (4 * d, 2 * d, 3, 3), **bn('down2_3.maxpool_conv.2', 4 * d),
              **stage('encoder_level3', 4 * d, en[2]), **stage('decoder_level3', 4 * d, de[2]),
              'up3_2.up.1.weight': (2 * d, 4 * d, 3, 3), **bn('up3_2.up.2', 2 * d),
              'reduce_chan_level2.1.weight': (2 * d, 4 * d, 1, 1), **bn('reduce_chan_level2.2', 2 * d),
              **stage('decoder_level2', 2 * d, de[1]),
              'up2_1.up.1.weight': (d, 2 * d, 3, 3), **bn('up2_1.up.2', d),
              **stage('decoder_level1', 2 * d, de[0]),
              'refinement.ca.1.weight': (2 * d // 8, 2 * d, 1, 1), 'refinement.ca.1.bias': (2 * d // 8,),
              'refinement.ca.3.weight': (2 * d, 2 * d // 8, 1, 1), 'refinement.ca.3.bias': (2 * d,),
              'refinement.sa.0.weight': (2 * d, 2 * d, 3, 3), 'refinement.sa.0.bias': (2 * d,),
              'refinement.sa.1.weight': (2 * d // 8, 2 * d, 3, 3), 'refinement.sa.1.bias': (2 * d // 8,),
              'refinement.sa.3.weight': (2 * d, 2 * d // 8, 3, 3), 'refinement.sa.3.bias': (2 * d,),
              'output.0.weight': (3, 2 * d, 3, 3), 'output.0.bias': (3,)}
    return shapes


def state_shapes(net):
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


@pytest.mark.parametrize('attention', ['fast', 'spikingjelly'])
def test_esdnet_state_dict_matches_official(attention):
    en, de = [1, 2, 1, 1], [1, 1, 2, 1]
    net = esdnet_arch.ESDNet(dim=16, en_num_blocks=en, de_num_blocks=de, attention=attention)
    assert state_shapes(net) == official_esdnet_shapes(16, en, de)
    # tdBN gammas start at alpha * v_th (v_th * 0.2 for the block's last one), as in the official model
    block = net.encoder_level2[1]
    for bn, v_th in ((block.residual[2], 0.15), (block.residual[5], 0.03), (block.shortcut[1], 0.15)):
        torch.testing.assert_close(bn.weight.detach(), torch.full((32,), 0.15 / 2 ** 0.5 * v_th / 0.15))


def test_esdnet_default_is_released_config():
    with torch.device('meta'):
        net = esdnet_arch.ESDNet()
    assert state_shapes(net) == official_esdnet_shapes(48, [4, 4, 8, 8], [2, 2, 2, 2])
    assert net.T == 4 and n_params(net) == 12_811_463


def nafblock_keys(p):
    convs = [f'{p}.{c}.{w}' for c in ('conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'sca.1')
             for w in ('weight', 'bias')]
    norms = [f'{p}.{n}.{w}' for n in ('norm1', 'norm2') for w in ('weight', 'bias')]
    return convs + norms + [f'{p}.beta', f'{p}.gamma']


def test_nafnet_keys_match_official():
    # official NAFNet(width=4, middle_blk_num=1, enc_blk_nums=[1, 2], dec_blk_nums=[2, 1])
    expected = {'intro.weight', 'intro.bias', 'ending.weight', 'ending.bias',
                'downs.0.weight', 'downs.0.bias', 'downs.1.weight', 'downs.1.bias', 'ups.0.0.weight', 'ups.1.0.weight',
                *nafblock_keys('encoders.0.0'), *nafblock_keys('encoders.1.0'), *nafblock_keys('encoders.1.1'),
                *nafblock_keys('middle_blks.0'),
                *nafblock_keys('decoders.0.0'), *nafblock_keys('decoders.0.1'), *nafblock_keys('decoders.1.0')}
    shapes = state_shapes(nafnet_arch.NAFNet(width=4, middle_blk_num=1, enc_blk_nums=[1, 2], dec_blk_nums=[2, 1]))
    assert set(shapes) == expected
    assert shapes['downs.1.weight'] == (16, 8, 2, 2)
    assert shapes['ups.0.0.weight'] == (32, 16, 1, 1)
    assert shapes['encoders.1.0.conv2.weight'] == (16, 1, 3, 3)
    assert shapes['decoders.0.1.sca.1.weight'] == (8, 8, 1, 1)
    assert shapes['middle_blks.0.beta'] == (1, 16, 1, 1)
    assert shapes['decoders.1.0.norm2.weight'] == (4,)


def transformer_block_keys(p, with_bias_norm=True):
    norms = [f'{p}.{n}.body.{w}' for n in ('norm1', 'norm2') for w in (('weight', 'bias') if with_bias_norm
                                                                         else ('weight',))]
    return norms + [f'{p}.attn.temperature', f'{p}.attn.qkv.weight', f'{p}.attn.qkv_dwconv.weight',
                    f'{p}.attn.project_out.weight', f'{p}.ffn.project_in.weight', f'{p}.ffn.dwconv.weight',
                    f'{p}.ffn.project_out.weight']


def test_restormer_keys_match_official():
    # official Restormer(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 1, 2, 2])
    stages = ['encoder_level1', 'encoder_level2', 'encoder_level3', 'latent',
              'decoder_level3', 'decoder_level2', 'decoder_level1', 'refinement']
    expected = {'patch_embed.proj.weight', 'down1_2.body.0.weight', 'down2_3.body.0.weight', 'down3_4.body.0.weight',
                'up4_3.body.0.weight', 'up3_2.body.0.weight', 'up2_1.body.0.weight', 'reduce_chan_level3.weight',
                'reduce_chan_level2.weight', 'output.weight',
                *(k for s in stages for k in transformer_block_keys(f'{s}.0'))}
    shapes = state_shapes(restormer_arch.Restormer(**TINY['Restormer']))
    assert set(shapes) == expected
    assert shapes['down1_2.body.0.weight'] == (4, 8, 3, 3)
    assert shapes['up4_3.body.0.weight'] == (128, 64, 3, 3)
    assert shapes['reduce_chan_level3.weight'] == (32, 64, 1, 1)
    assert shapes['latent.0.attn.temperature'] == (2, 1, 1)
    assert shapes['encoder_level1.0.ffn.project_in.weight'] == (42, 8, 1, 1)  # int(8 * 2.66) * 2
    assert shapes['refinement.0.attn.qkv_dwconv.weight'] == (48, 1, 3, 3)
    # BiasFree norms carry only a weight; dual-pixel adds skip_conv
    dp = state_shapes(restormer_arch.Restormer(inp_channels=6, LayerNorm_type='BiasFree', dual_pixel_task=True,
                                               **TINY['Restormer']))
    assert set(dp) == (expected - {k for k in expected if k.endswith('body.bias')}) | {'skip_conv.weight'}
    assert dp['patch_embed.proj.weight'] == (8, 6, 3, 3)


# ------------------------------------------------------------------------------------------ presets, features
DOCUMENTED_COUNTS = [
    (spikerir_arch, lambda: spikerir_arch.SpikerIR(), 92_935),
    (spikerir_arch, lambda: spikerir_arch.SpikerIR(preset='base'), 686_571),
    (nafnet_arch, lambda: nafnet_arch.NAFNet(preset='sidd-width32'), 29_159_715),
    (nafnet_arch, lambda: nafnet_arch.NAFNet(preset='gopro-width64'), 67_888_835),
    (restormer_arch, lambda: restormer_arch.Restormer(), 26_126_644),
    (esdnet_arch, lambda: esdnet_arch.ESDNet(), 12_811_463),
]


@pytest.mark.parametrize('module,make,count', DOCUMENTED_COUNTS)
def test_parameter_counts_are_documented(module, make, count):
    with torch.device('meta'):
        net = make()
    print(f'{type(net).__name__}: {n_params(net):,} parameters')
    assert n_params(net) == count
    assert f'{count:,}' in inspect.getsource(module) or f'{count / 1e6:.2f}M' in inspect.getsource(module)


def test_spikerir_presets_and_overrides():
    tiny = spikerir_arch.SpikerIR()
    assert 0.07e6 <= n_params(tiny) <= 0.1e6 and 0.4e6 <= n_params(spikerir_arch.SpikerIR(preset='base')) <= 1e6
    wide = spikerir_arch.SpikerIR(preset='tiny', dim=12, dec_blocks=[1, 1, 3])
    assert wide.patch_embed.proj.out_channels == 12 and len(wide.decoder_level3) == 3 and len(wide.encoder_level1) == 1
    narrow = nafnet_arch.NAFNet(preset='gopro-width64', width=4)
    assert narrow.intro.out_channels == 4 and len(narrow.encoders[3]) == 28 and len(narrow.middle_blks) == 1


def test_spikerir_decoder_features_are_multistep():
    net = spikerir_arch.SpikerIR(T=2, reduction_t=2)
    shapes = {}
    for name in ('decoder_level3', 'decoder_level2', 'decoder_level1'):
        getattr(net, name).register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape)))
    run(net, torch.rand(1, 3, 16, 24))
    assert shapes == {'decoder_level3': (2, 1, 32, 4, 6), 'decoder_level2': (2, 1, 16, 8, 12),
                      'decoder_level1': (2, 1, 16, 16, 24)}


def test_spiden_readout_predicts_noise_residual():
    net = build('SPIDEN').eval()
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        net.readout.weight.zero_()  # no predicted noise -> identity
        assert torch.equal(run(net, x), x)
        net.readout.weight.fill_(0.01)  # readout = mean over T of the integrated last-layer input
        spikes = net.body(x.unsqueeze(0).repeat(net.T, 1, 1, 1, 1))
        expected = x - F.conv2d(spikes.mean(0), net.readout.weight, padding=1)
        torch.testing.assert_close(run(net, x), expected)
        assert set(spikes.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize('make,words', [
    (lambda: spikerir_arch.SpikerIR(preset='huge'), ['huge', 'base', 'tiny']),
    (lambda: spikerir_arch.SpikerIR(neuron='relu'), ['relu', 'lif', 'if']),
    (lambda: spikerir_arch.SpikerIR(attention='cbam'), ['cbam', 'fast', 'spikingjelly', 'none']),
    (lambda: spikerir_arch.SpikerIR(T=2), ['T=2', 'reduction_t=4']),
    (lambda: spikerir_arch.SpikerIR(dim=2), ['reduction_c=4']),
    (lambda: esdnet_arch.ESDNet(dim=8, en_num_blocks=[1] * 4, de_num_blocks=[1] * 4), ['channels=8', 'reduction_c']),
    (lambda: esdnet_arch.ESDNet(en_num_blocks=[4, 4]), ['[4, 4]', 'block counts']),
    (lambda: esdnet_arch.ESDNet(T=0), ['T must be']),
    (lambda: nafnet_arch.NAFNet(preset='sidd'), ['sidd', 'sidd-width32', 'gopro-width64']),
    (lambda: nafnet_arch.NAFNet(enc_blk_nums=[1, 1], dec_blk_nums=[1]), ['same length']),
    (lambda: restormer_arch.Restormer(LayerNorm_type='Batch'), ['Batch', 'WithBias', 'BiasFree']),
    (lambda: restormer_arch.Restormer(dim=6, heads=[4, 1, 1, 1]), ['heads=4']),
    (lambda: ARCH_REGISTRY.get('SPIDEN')(depth=1), ['depth']),
    (lambda: ARCH_REGISTRY.get('SPIDEN')(T=0), ['T must be']),
])
def test_bad_arguments_raise_clear_errors(make, words):
    with pytest.raises(ValueError) as err:
        make()
    for word in words:
        assert word in str(err.value)


def test_spiking_nets_reject_multistep_input():
    with pytest.raises(ValueError, match=r'\[B, C, H, W\]'):
        build('SpikerIR')(torch.rand(2, 1, 3, 8, 8))


@pytest.mark.parametrize('name, binary', [('SpikerIR', True), ('ESDNet', False)])
def test_block_shortcut_reads_spikes_in_spikerir_and_the_analog_input_in_esdnet(name, binary):
    """SpikerIR's default shortcut='spike' makes every conv inside its blocks spike-driven; ESDNet keeps the
    official real-valued shortcut input. Both share the same keys, so only the wiring differs."""
    net = build(name).train()
    inputs = []
    for module in net.modules():
        if isinstance(module, SpikingResidualBlock):
            module.shortcut[0].register_forward_hook(lambda m, i, o: inputs.append(i[0]))
    run(net, torch.rand(2, 3, 16, 16))
    assert inputs and all(bool(((t == 0) | (t == 1)).all()) == binary for t in inputs)
    analog = spikerir_arch.SpikerIR(shortcut='analog', T=2, reduction_t=2)
    assert state_shapes(analog) == state_shapes(build('SpikerIR'))
    with pytest.raises(ValueError, match="shortcut='both'.*'analog', 'spike'"):
        spikerir_arch.SpikerIR(shortcut='both')


def test_image_conv_runs_once_and_its_output_is_repeated_over_T():
    net = build('ESDNet').eval()
    x = torch.rand(2, 3, 8, 12)
    calls = []
    net.patch_embed.proj.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
    with torch.no_grad():
        embedded = net.encode(x)
        per_step = net.patch_embed(x.unsqueeze(0).repeat(net.T, 1, 1, 1, 1))  # the official direct encoding
    assert calls[0] == (1, 2, 3, 8, 12) and embedded.shape == per_step.shape == (net.T, 2, 8, 8, 12)
    torch.testing.assert_close(embedded, per_step, rtol=1e-6, atol=1e-7)


def test_rate_twin_has_the_spiking_layout_and_the_lif_rate_endpoints():
    """neuron='rate' builds the analog twin: same parameter names and shapes as the spiking net (so it can teach
    and initialise it), no spiking neuron, and an activation that is 0 below v_th/2 and 1 from v_th on, where an LIF
    neuron of the block under a constant input fires never / at every step."""
    from spikingjelly.activation_based.neuron.base_node import BaseNode
    from spikerir_plugin.archs.neurons import RateActivation
    twin, snn = spikerir_arch.SpikerIR(neuron='rate', T=2, reduction_t=2), spikerir_arch.SpikerIR(T=2, reduction_t=2)
    assert {k: v.shape for k, v in twin.state_dict().items()} == {k: v.shape for k, v in snn.state_dict().items()}
    assert not any(isinstance(m, BaseNode) for m in twin.modules())
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(twin.eval()(x), twin(x))
    act, th = RateActivation(0.15), 0.15
    values = act(torch.tensor([-1.0, th / 2, th, 2 * th]))
    assert values.tolist() == [0.0, 0.0, 1.0, 1.0]
    lif = snn.decoder_level1[0].residual[0]  # constant input over T=4 steps, from rest
    for level, rate in ((0.4 * th, 0.0), (1.2 * th, 1.0)):
        spikes = lif(torch.full((4, 1, 1), level))
        assert spikes.mean().item() == rate and act(torch.tensor(level)).item() == rate
