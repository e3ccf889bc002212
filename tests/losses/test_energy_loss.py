"""SynOpsLoss (train.energy_opt): the penalty equals a hand count of spikes x fan-out and spikingjelly's SynOp count
(spikerir-energy's measure_energy) on the same input, its gradient reaches the layers before the first neuron through
the surrogate, a budget is a hinge, and both plugin models train with it and log it."""
import copy
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import spikerir_plugin  # noqa: F401  (registers archs, losses, models)
from basicsr.archs import build_network
from basicsr.models import build_model
from spikingjelly.activation_based import layer
from spikerir_plugin.archs.neurons import MultiLevelSpikeNode, StatelessLIFNode
from spikerir_plugin.archs.spikerir_arch import SpikerIR
from spikerir_plugin.losses.energy_loss import E_AC_PJ, SynOpsLoss
from spikerir_plugin.tools import energy_report
from spikerir_plugin.tools.energy_report import measure_energy
from spikerir_plugin.utils.options import OptionKeyError

pytestmark = pytest.mark.usefixtures('one_thread')
T = 3


class TwoReaders(nn.Module):
    """image conv (analog: MACs) -> neuron -> two spike-driven convs: 3x3 stride 1 (6 outputs) and a grouped 3x3
    stride 2 (8 outputs, 2 groups: 4 weights per tap and input channel)."""

    def __init__(self, neuron):
        super().__init__()
        self.inp = nn.Conv2d(1, 4, 3, padding=1)
        self.neuron = neuron
        self.read = layer.Conv2d(4, 6, 3, padding=1, step_mode='m')
        self.read2 = layer.Conv2d(4, 8, 3, stride=2, padding=1, groups=2, step_mode='m')

    def forward(self, x):
        y = self.inp(x).unsqueeze(0).repeat(T, 1, 1, 1, 1)
        s = self.neuron(y)
        return self.read(s).mean(0) + F.interpolate(self.read2(s).mean(0), size=x.shape[-2:]).sum(1, keepdim=True)


def make_net(kind, seed=0):
    torch.manual_seed(seed)
    neuron = StatelessLIFNode(step_mode='m') if kind == 'lif' else MultiLevelSpikeNode(levels=4)
    return TwoReaders(neuron)


def image(h=9, w=11, batch=2, seed=1):
    return 3 * torch.rand(batch, 1, h, w, generator=torch.Generator().manual_seed(seed))


def recorded(loss, net, x):
    with loss.recording():
        net(x)
    return loss()


def taps_hit(size, stride):
    """Per input position along one axis: how many kernel taps (kernel 3, padding 1) of the outputs read it."""
    outs = (size + 2 - 3) // stride + 1
    return [sum(1 for o in range(outs) if abs(i - stride * o) <= 1) for i in range(size)]


def hand_count(spikes, units_per_spike):
    """SynOps of the two readers from the spikes by enumeration: spikes x out_channels / groups x taps hit."""
    _, _, _, h, w = spikes.shape
    total = 0.0
    for out_per_channel, stride in ((6, 1), (4, 2)):
        rows, cols = taps_hit(h, stride), taps_hit(w, stride)
        for i in range(h):
            for j in range(w):
                total += float(spikes[..., i, j].sum()) * units_per_spike * out_per_channel * rows[i] * cols[j]
    return total


@pytest.mark.parametrize('kind', ['lif', 'multilevel'])
def test_penalty_is_spikes_times_fan_out_and_equals_the_energy_report(kind):
    net = make_net(kind).eval()
    x = image()
    seen = []
    handle = net.neuron.register_forward_hook(lambda m, i, out: seen.append(out.detach().clone()))
    loss = SynOpsLoss(unit='synops').attach(net)
    value = float(recorded(loss, net, x).detach())
    handle.remove()
    spikes = seen[0]
    units = 4 if kind == 'multilevel' else 1  # a level-k spike k/4 is k accumulates
    assert 0 < float((spikes > 0).float().mean()) < 1  # the neuron fires, not everywhere
    by_hand = hand_count(spikes, units) / x.shape[0]
    assert value == pytest.approx(by_hand, rel=1e-6)
    # interior spikes cost the full kernel, border ones less: the count is not rate x dense fan-out
    assert value < float(spikes.sum()) * units * (6 * 9 + 4 * 9 / 4) / x.shape[0]

    report = measure_energy(net, inputs=x, inference_copy=False)
    assert value == pytest.approx(report['totals']['synops'] / x.shape[0], rel=1e-6)  # exact: borders included
    assert float(loss.measured['firing_rate']) == pytest.approx(report['totals']['mean_firing_rate'], rel=1e-5)
    assert loss.uncovered == []

    mj = SynOpsLoss(unit='mJ', loss_weight=2.0).attach(net)
    assert E_AC_PJ == energy_report.E_AC_PJ
    assert float(recorded(mj, net, x).detach()) == pytest.approx(2.0 * by_hand * E_AC_PJ * 1e-9, rel=1e-6)


def test_penalty_equals_the_energy_report_on_a_spikerir_student():
    """The whole student (blocks, shortcut convs on spikes, down/up-sampling): the same SynOps as spikerir-energy
    (which measures the inference copy) on the same image, every spike-reading conv covered."""
    torch.manual_seed(0)
    net = SpikerIR(preset='tiny', T=2, reduction_t=2)
    with torch.no_grad():  # a livelier student than the initialisation (which fires at about 1 %, most convs silent)
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):  # the tdBNs
                m.weight.mul_(3.0)
                m.bias.add_(0.3)
    net.eval()
    x = energy_report.make_input(24, 1)
    loss = SynOpsLoss(unit='synops').attach(net)
    value = float(recorded(loss, net, x).detach())
    report = measure_energy(net, inputs=x)
    assert report['totals']['synops'] > 0
    assert value == pytest.approx(report['totals']['synops'], rel=1e-5)
    assert loss.uncovered == []
    spike_layers = {r['name'] for r in report['layers'] if r['synops']}
    assert len(spike_layers) >= 20  # every block's convs fire
    assert spike_layers == {name for readers in loss.readers.values() for name, _ in readers}


def test_gradient_reaches_the_layers_before_the_first_neuron():
    net = make_net('lif').train()
    loss = SynOpsLoss(unit='synops').attach(net)
    value = recorded(loss, net, image())
    assert value.requires_grad
    value.backward()
    assert net.inp.weight.grad is not None and float(net.inp.weight.grad.abs().sum()) > 0
    assert net.read.weight.grad is None  # the readers' weights do not change the count


def test_budget_is_a_hinge_scaled_by_pixel_count():
    net = make_net('lif').eval()
    x = image(8, 8)
    measured = float(recorded(SynOpsLoss(unit='synops').attach(net), net, x).detach())
    # a budget per 16 x 16 image: the 8 x 8 crop gets a quarter of it
    under = SynOpsLoss(target_synops=4 * measured * 1.5, image_size=16).attach(net)
    assert float(recorded(under, net, x).detach()) == 0.0
    over = SynOpsLoss(target_synops=4 * measured * 0.5, image_size=16, loss_weight=3.0).attach(net)
    assert float(recorded(over, net, x).detach()) == pytest.approx(3.0 * 0.5 * measured, rel=1e-6)
    mj_over = SynOpsLoss(target_mj=measured * 0.25 * E_AC_PJ * 1e-9, image_size=8).attach(net)
    assert float(recorded(mj_over, net, x).detach()) == pytest.approx(0.75 * measured * E_AC_PJ * 1e-9, rel=1e-5)


def test_loss_arguments_are_checked():
    with pytest.raises(ValueError, match='not both'):
        SynOpsLoss(target_mj=0.1, target_synops=1e6)
    with pytest.raises(ValueError, match='unit'):
        SynOpsLoss(unit='pJ')
    with pytest.raises(ValueError, match='no spiking neurons'):
        SynOpsLoss().attach(nn.Conv2d(3, 3, 3))
    with pytest.raises(RuntimeError, match='recording'):
        SynOpsLoss().attach(make_net('lif'))()


# ---------------------------------------------------------------------------------------------- in the models
STUDENT = {'type': 'SpikerIR', 'preset': 'tiny', 'T': 2, 'reduction_t': 2}


def train_opt(tmp, model_type='SpikingSRModel', **train):
    os.makedirs(tmp, exist_ok=True)
    opt = {'name': 'energy', 'model_type': model_type, 'num_gpu': 0, 'is_train': True, 'dist': False, 'rank': 0,
           'world_size': 1, 'scale': 1, 'network_g': dict(STUDENT),
           'path': {'models': str(tmp), 'training_states': str(tmp), 'visualization': str(tmp)},
           'train': {'optim_g': {'type': 'Adam', 'lr': 1e-3}, 'pixel_opt': {'type': 'L1Loss'}, **train}}
    return opt


def batch(seed=0, size=16):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(2, 3, size, size, generator=g)
    return {'lq': (gt + 0.1 * torch.randn(gt.shape, generator=g)).clamp(0, 1), 'gt': gt}


def steps(model, n=2):
    logs = []
    for it in range(1, n + 1):
        model.feed_data(batch(it))
        model.optimize_parameters(it)
        logs.append(model.get_current_log())
    return logs


def test_spiking_sr_model_trains_with_a_scheduled_budget_and_logs_it(tmp_path):
    energy = {'type': 'SynOpsLoss', 'loss_weight': 1e3, 'target_mj': 1e-9, 'image_size': 16,
              'schedule': {'type': 'linear', 'start': 0.0, 'end': 1.0, 'start_iter': 1, 'end_iter': 3}}
    torch.manual_seed(0)
    model = build_model(train_opt(tmp_path, energy_opt=energy))
    logs = steps(model, 2)
    for log, weight in zip(logs, (0.0, 0.5)):
        assert {'l_pix', 'l_energy', 'synops', 'firing_rate', 'energy_weight', 'l_total'} <= set(log)
        assert log['energy_weight'] == pytest.approx(weight)
        assert log['synops'] > 0 and 0 < log['firing_rate'] < 1
        expected = 1e3 * max(0.0, log['synops'] * E_AC_PJ * 1e-9 - 1e-9)  # budget for 16 x 16 = the crop
        assert log['l_energy'] == pytest.approx(expected, rel=1e-4)
        assert log['l_total'] == pytest.approx(log['l_pix'] + weight * log['l_energy'], rel=1e-5)
    model.feed_data(batch(9))
    model.test()  # validation runs the inference copy, which the hooks do not record
    assert model.cri_energy._record is None and model.output.shape == (2, 3, 16, 16)


def test_distill_model_penalises_the_batch_forward_only(tmp_path):
    """SpikerIRDistillModel gets the term from the shared training step; the extra distillation inputs' forward
    (train.kd_inputs) is not counted: step 1 measures the same spikes with and without them."""
    torch.manual_seed(0)
    teacher = build_network({'type': 'NAFNet', 'width': 8, 'middle_blk_num': 1, 'enc_blk_nums': [1, 1],
                             'dec_blk_nums': [1, 1]})
    torch.save({'params': teacher.state_dict()}, tmp_path / 'teacher.pth')
    energy = {'loss_weight': 0.1, 'unit': 'mJ'}
    logs = []
    for extra in ({}, {'kd_inputs': {'type': 'transform'}}):
        opt = train_opt(tmp_path / str(len(logs)), 'SpikerIRDistillModel', energy_opt=dict(energy),
                        kd_opt={'type': 'L1Loss'}, **extra)
        opt['network_t'] = {'type': 'NAFNet', 'width': 8, 'middle_blk_num': 1, 'enc_blk_nums': [1, 1],
                            'dec_blk_nums': [1, 1]}
        opt['path'].update(pretrain_network_t=str(tmp_path / 'teacher.pth'), param_key_t='params')
        torch.manual_seed(0)
        logs.append(steps(build_model(opt), 1)[0])
    alone, with_extra = logs
    assert 'l_kd_inputs' in with_extra and 'l_energy' in with_extra
    assert with_extra['synops'] == pytest.approx(alone['synops'], rel=1e-6)
    assert alone['l_energy'] == pytest.approx(0.1 * alone['synops'] * E_AC_PJ * 1e-9, rel=1e-5)


def test_unknown_energy_option_keys_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r'train\.energy_opt\.target_mJ \(did you mean target_mj'):
        build_model(train_opt(tmp_path, energy_opt={'type': 'SynOpsLoss', 'target_mJ': 0.1}))
    from spikerir_plugin.models.spiking_sr_model import SpikingSRModel
    with pytest.raises(ValueError, match=r'train\.energy_opt\.target_mJ'):  # the pipeline: before any folder exists
        SpikingSRModel.launch_checks(train_opt(tmp_path, energy_opt={'target_mJ': 0.1}))
    with pytest.raises(ValueError, match=r'train\.energy_opt\.schedule'):
        SpikingSRModel.launch_checks(train_opt(tmp_path, energy_opt={'schedule': {'type': 'cosine', 'start': 1}}))
    with pytest.raises(ValueError, match='not an energy loss'):
        build_model(train_opt(tmp_path, energy_opt={'type': 'L1Loss'}))
    with pytest.raises(ValueError, match=r'train\.energy_opt\.schedule'):
        build_model(train_opt(tmp_path, energy_opt={'schedule': {'type': 'linear', 'start': 1}}))
    with pytest.raises(OptionKeyError, match='did you mean energy_opt'):
        build_model(train_opt(tmp_path, energy_opts={'type': 'SynOpsLoss'}))
    opt = copy.deepcopy(train_opt(tmp_path, energy_opt={'loss_weight': 1.0}))
    opt['speed'] = {'compile': True}
    with pytest.raises(ValueError, match='speed.compile'):
        build_model(opt)


@pytest.mark.parametrize('name', ['train_SpikerIR_SIDD.yml', 'train_SpikerIR_GaussianDenoise_sigma25.yml'])
def test_the_shipped_commented_budget_is_a_valid_energy_opt(name):
    """The shipped student files show the measured budget commented out: uncommented, it is a valid
    train.energy_opt (target_mj 0.10 per 128x128 image, benchmarks/README.md's energy front)."""
    import re
    import yaml
    from conftest import REPO_ROOT
    from spikerir_plugin.losses.energy_loss import check_energy_opt
    from spikerir_plugin.models.kd_schedule import KDSchedule
    text = open(os.path.join(REPO_ROOT, 'options', name), encoding='utf-8').read()
    block = re.search(r'^  # energy_opt:.*?(?=^\S|^  [^#\s])', text, re.M | re.S).group(0)
    uncommented = '\n'.join(re.sub(r'^  # ', '  ', line) for line in block.splitlines())
    assert 'energy_opt' not in (yaml.safe_load(text)['train'])  # shipped commented out: behaviour unchanged
    spec = check_energy_opt(yaml.safe_load('train:\n' + uncommented)['train']['energy_opt'])
    schedule = spec.pop('schedule', None)
    loss = SynOpsLoss(**{k: v for k, v in spec.items() if k != 'type'})
    assert (loss.target, loss.unit, loss.image_size) == (0.1, 'mJ', 128)
    if schedule is not None:
        assert KDSchedule.from_opt(schedule, 'energy_opt.schedule')(10000) == pytest.approx(0.5)


def test_blocks_recomputed_in_backward_are_not_counted_twice(tmp_path):
    """speed.checkpoint recomputes the residual blocks (their neurons included) in backward, outside the recorded
    forward: the same terms and the same weights as without it."""
    runs = []
    for speed in ({}, {'checkpoint': True}):
        opt = train_opt(tmp_path / str(len(runs)), energy_opt={'loss_weight': 10.0})
        opt['speed'] = speed
        torch.manual_seed(0)
        model = build_model(opt)
        runs.append((steps(model, 1), [p.detach().clone() for p in model.net_g.parameters()]))
    (plain_logs, plain_weights), (checkpointed_logs, checkpointed_weights) = runs
    assert checkpointed_logs == plain_logs
    assert all(torch.equal(a, b) for a, b in zip(plain_weights, checkpointed_weights))
