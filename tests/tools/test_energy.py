"""spikerir-energy: op counts checked against exact hand counts, energy formula, firing rates, report files, CLI."""
import json

import pytest
import torch
import torch.nn.functional as F
import yaml
from spikingjelly.activation_based import layer, neuron
from torch import nn

import spikerir_plugin  # noqa: F401  (registers SpikerIR / NAFNet)
from basicsr.archs import build_network
from spikerir_plugin.archs.neurons import StatelessLIFNode
from spikerir_plugin.tools import energy_report
from spikerir_plugin.tools.energy_report import make_input, measure_energy

T, B = 3, 2


class TinySNN(nn.Module):
    """Direct-encoded spiking net: image conv (T x MAC), spike convs (incl. stride 2), a spike linear, analog out."""

    def __init__(self):
        super().__init__()
        self.T = T
        lif = lambda: StatelessLIFNode(tau=2.0, decay_input=False, v_threshold=0.15, step_mode='m')  # noqa: E731
        self.conv_in = layer.Conv2d(3, 6, 3, padding=1, bias=False, step_mode='m')
        self.lif1, self.lif2, self.lif3 = lif(), lif(), lif()
        self.conv1 = layer.Conv2d(6, 6, 3, padding=1, bias=False, step_mode='m')
        self.down = layer.Conv2d(6, 8, 3, stride=2, padding=1, bias=False, step_mode='m')
        self.fc = layer.Linear(8, 4, bias=False, step_mode='m')
        self.out = nn.Conv2d(4, 3, 1)

    def forward(self, x):
        s = self.lif1(self.conv_in(x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)))
        s = self.lif3(self.down(self.lif2(self.conv1(s))))
        y = self.fc(s.permute(0, 1, 3, 4, 2)).permute(0, 1, 4, 2, 3)
        return self.out(y.mean(0))


class TinyANN(nn.Module):
    """Conv, ReLU, a conv fed all zeros, a channel-attention matmul (bmm) and a linear: all dense MACs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.dead = nn.Conv2d(4, 4, 1)
        self.proj = nn.Linear(4, 4)

    def forward(self, x):
        f = F.relu(self.conv(x))
        f = f + self.dead(F.relu(-f))  # input of `dead` is all zeros
        b, c, h, w = f.shape
        q = f.flatten(2)
        attn = torch.bmm(q, q.transpose(1, 2)).softmax(-1)
        f = torch.bmm(attn, q).view(b, c, h, w)
        return self.proj(f.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)[:, :3]


def hand_counts(net, x):
    """Exact counts from a plain forward with hooks: per input spike the weights it reaches (F.unfold of the spike
    map x C_out; ones x out_features for linears), dense MACs for non-spike inputs; neuron output means."""
    counts, rates, names = {}, {}, {m: n for n, m in net.named_modules()}

    def conv_hook(m, inp, _out):
        s = inp[0]
        if isinstance(m, nn.Linear):
            binary = bool(((s == 0) | (s == 1)).all())
            dense = s.numel() // s.shape[-1] * m.in_features * m.out_features
            counts[names[m]] = ('SynOp', int(s.sum()) * m.out_features) if binary else ('MAC', dense)
            return
        s = s.flatten(0, 1) if s.dim() == 5 else s
        binary = bool(((s == 0) | (s == 1)).all())
        if binary:
            ones = F.unfold(s, m.kernel_size, m.dilation, m.padding, m.stride).sum()
            counts[names[m]] = ('SynOp', int(ones) * m.out_channels)
        else:
            out_hw = F.conv2d(s, m.weight, None, m.stride, m.padding, m.dilation).shape[-2:]
            counts[names[m]] = ('MAC', s.shape[0] * m.out_channels * m.in_channels * m.kernel_size[0]
                                * m.kernel_size[1] * out_hw[0] * out_hw[1])

    def lif_hook(m, _inp, out):
        rates[names[m]] = out.mean().item()

    hs = [m.register_forward_hook(conv_hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    hs += [m.register_forward_hook(lif_hook) for m in net.modules() if isinstance(m, neuron.BaseNode)]
    with torch.no_grad():
        net(x)
    for h in hs:
        h.remove()
    return counts, rates


@pytest.fixture(scope='module')
def tiny_snn_result():
    torch.manual_seed(0)
    net = TinySNN().eval()
    x = make_input(16, B)
    counts, rates = hand_counts(net, x)
    return net, x, counts, rates, measure_energy(net, inputs=x, e_mac=4.6, e_ac=0.9)


def test_synops_and_macs_equal_exact_hand_counts(tiny_snn_result):
    _, x, counts, _, res = tiny_snn_result
    rows = {r['name']: r for r in res['layers']}
    assert set(rows) == set(counts) == {'conv_in', 'conv1', 'down', 'fc', 'out'}
    for name, (kind, n) in counts.items():
        assert rows[name]['kind'] == kind, name
        assert rows[name]['synops' if kind == 'SynOp' else 'macs'] == n, name
        assert rows[name]['macs' if kind == 'SynOp' else 'synops'] == 0, name
    assert [counts[n][0] for n in ('conv_in', 'conv1', 'down', 'fc', 'out')] == ['MAC', 'SynOp', 'SynOp', 'SynOp',
                                                                                  'MAC']
    assert all(counts[n][1] > 0 for n in counts)  # every spike layer actually received spikes
    # the image conv runs on the image repeated T times: T x the dense count of one pass
    assert counts['conv_in'][1] == T * B * 6 * 3 * 9 * 16 * 16
    assert res['first_layer'] == {'name': 'conv_in', 'image_passes': T}
    assert 'counted 3 times' in res['convention']['text']
    tot = res['totals']
    assert tot['synops'] == sum(n for k, n in counts.values() if k == 'SynOp')
    assert tot['macs'] == sum(n for k, n in counts.values() if k == 'MAC')


def test_energy_follows_the_formula(tiny_snn_result):
    net, x, _, _, res = tiny_snn_result
    tot = res['totals']
    assert tot['energy_mJ'] == pytest.approx((4.6 * tot['macs'] + 0.9 * tot['synops']) * 1e-9, rel=1e-12)
    assert tot['energy_mJ_per_image'] == pytest.approx(tot['energy_mJ'] / B)
    for r in res['layers']:
        assert r['energy_pj'] == pytest.approx(4.6 * r['macs'] + 0.9 * r['synops'])
    other = measure_energy(net, inputs=x, e_mac=3.0, e_ac=0.1)['totals']
    assert other['energy_mJ'] == pytest.approx((3.0 * tot['macs'] + 0.1 * tot['synops']) * 1e-9)
    assert res['params'] == sum(p.numel() for p in net.parameters())


def test_firing_rates_match_hooks_and_state_is_reset(tiny_snn_result):
    net, x, _, rates, res = tiny_snn_result
    assert set(res['neurons']) == {'lif1', 'lif2', 'lif3'}
    for name, rate in res['neurons'].items():
        assert 0.0 <= rate <= 1.0
        assert rate == pytest.approx(rates[name], abs=1e-6)  # hooks here average in float32
    assert 0 < rates['lif1'] < 1
    rows = {r['name']: r for r in res['layers']}
    assert rows['conv1']['fr_in'] == pytest.approx(rates['lif1'], abs=1e-6)
    assert rows['down']['fr_in'] == pytest.approx(rates['lif2'], abs=1e-6)
    assert rows['conv_in']['fr_in'] is None
    assert all(isinstance(m.v, float) for m in net.modules() if isinstance(m, neuron.BaseNode))  # reset after use
    assert measure_energy(net, inputs=x)['totals'] == res['totals']  # no state leaks between calls


def test_ann_is_counted_densely_with_matmuls():
    torch.manual_seed(0)
    net = TinyANN()
    x = make_input(8, B)
    res = measure_energy(net, inputs=x)
    rows = {r['name']: r for r in res['layers']}
    hw = 8 * 8
    assert not res['spiking'] and res['neurons'] == {}
    assert rows['conv']['macs'] == B * 4 * 3 * 9 * hw
    assert rows['dead']['macs'] == B * 4 * 4 * hw  # all-zero input still costs dense MACs in an ANN
    assert rows['proj']['macs'] == B * hw * 4 * 4
    assert rows['(root)']['macs'] == 2 * B * 4 * 4 * hw  # the two bmm calls live in the root's own scope
    assert res['totals']['macs'] == sum(r['macs'] for r in rows.values()) and res['totals']['synops'] == 0
    grey = measure_energy(nn.Conv2d(1, 2, 3, padding=1), input_shape=(1, 1, 8, 12))  # built-in photo input
    assert grey['input_shape'] == [1, 1, 8, 12] and grey['totals']['macs'] == 2 * 9 * 8 * 12


def test_report_files(tiny_snn_result, tmp_path):
    _, _, _, _, res = tiny_snn_result
    text = energy_report.format_report(res, None, 'tiny')
    assert 'conv_in' in text and 'counted 3 times' in text and 'SynOp' in text
    energy_report.plot_report(res, str(tmp_path / 'e.png'), 'tiny')
    with open(tmp_path / 'e.png', 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def tiny_options(tmp_path, ckpt):
    opt = {'name': 'tiny_energy',
           'network_g': {'type': 'SpikerIR', 'dim': 8, 'enc_blocks': [1, 1, 1], 'dec_blocks': [1, 1, 1], 'T': 2,
                         'reduction_t': 2},
           'network_t': {'type': 'NAFNet', 'width': 8, 'middle_blk_num': 1, 'enc_blk_nums': [1, 1],
                         'dec_blk_nums': [1, 1]},
           'path': {'pretrain_network_g': ckpt, 'param_key_g': 'params_ema', 'pretrain_network_t': None}}
    path = tmp_path / 'opt.yml'
    path.write_text(yaml.safe_dump(opt))
    return opt, str(path)


def saved_student(tmp_path):
    """(options, their file, the network) of a tiny student whose checkpoint the options name."""
    torch.manual_seed(3)
    opt, _ = tiny_options(tmp_path, None)
    trained = build_network(dict(opt['network_g']))
    ckpt = str(tmp_path / 'net_g.pth')
    torch.save({'params_ema': trained.state_dict()}, ckpt)
    opt, opt_path = tiny_options(tmp_path, ckpt)
    return opt, opt_path, trained


def test_cli_on_spikerir_student_and_nafnet_teacher(tmp_path):
    _, opt_path, trained = saved_student(tmp_path)
    out = tmp_path / 'energy'
    assert energy_report.main(['-opt', opt_path, '--size', '32', '--out', str(out)]) == 0
    for f in ('energy.json', 'energy.png', 'energy.txt'):
        assert (out / f).stat().st_size > 0
    result = json.loads((out / 'energy.json').read_text())
    student, teacher = result['student'], result['teacher']
    # the image conv runs once per forward; its output (not the image) is repeated over T
    assert student['spiking'] and student['T'] == 2 and student['first_layer'] == {'name': 'patch_embed.proj',
                                                                                   'image_passes': 1}
    assert not teacher['spiking'] and teacher['totals']['synops'] == 0 and teacher['totals']['macs'] > 0
    assert result['ratio_teacher_over_student'] == pytest.approx(
        teacher['totals']['energy_mJ'] / student['totals']['energy_mJ'])
    # the checkpoint's weights were measured (not the fresh random init): same counts as measuring them directly
    direct = measure_energy(trained, inputs=make_input(32, 1))
    assert student['totals'] == direct['totals']
    assert 0 <= student['totals']['mean_firing_rate'] <= 1
    assert 'energy ratio teacher/student' in (out / 'energy.txt').read_text()


def test_cli_errors_are_clear(tmp_path, capsys):
    _, opt_path = tiny_options(tmp_path, str(tmp_path / 'missing.pth'))
    with pytest.raises(SystemExit):
        energy_report.main(['-opt', opt_path, '--size', '16', '--out', str(tmp_path / 'o'), '--no-teacher'])
    assert 'missing.pth' in capsys.readouterr().err
    bad = tmp_path / 'bad.yml'
    bad.write_text(yaml.safe_dump({'name': 'x', 'network_t': {'type': 'NAFNet'}}))
    with pytest.raises(SystemExit):
        energy_report.main(['-opt', str(bad)])
    assert "no network_g section; top-level keys: ['name', 'network_t']" in capsys.readouterr().err


@pytest.mark.parametrize('factor, verdict', [(2.0, 'under it'), (0.5, '100% over it')])
def test_cli_shows_the_options_energy_budget(tmp_path, factor, verdict):
    """With train.energy_opt a budget, the report names it at the report's size and whether the network is under it:
    a budget set to twice / half the network's measured spike-driven energy at 64x64, given per 32x32 image."""
    opt, opt_path, trained = saved_student(tmp_path)
    measured = measure_energy(trained, inputs=make_input(64, 1))
    spike_mj = measured['totals']['synops'] * measured['convention']['e_ac_pJ'] * 1e-9
    opt['train'] = {'energy_opt': {'type': 'SynOpsLoss', 'target_mj': factor * spike_mj / 4, 'image_size': 32}}
    with open(opt_path, 'w') as f:
        yaml.safe_dump(opt, f)
    out = tmp_path / 'energy'
    assert energy_report.main(['-opt', opt_path, '--size', '64', '--out', str(out), '--no-teacher']) == 0
    text = (out / 'energy.txt').read_text()
    assert 'train.energy_opt budget' in text and 'per 64x64 image' in text and text.rstrip().endswith(verdict)
    assert json.loads((out / 'energy.json').read_text())['budget'] == text.rstrip().splitlines()[-1]
