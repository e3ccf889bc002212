"""spikerir-energy: per-layer firing rates, SynOps, MACs and estimated energy of a student (and its teacher).

Convention (printed with every report):
  E = e_mac * MAC + e_ac * SynOp, default 4.6 pJ and 0.9 pJ (45 nm, Horowitz 2014).
  SynOp: exact synaptic accumulations of layers whose input is binary spikes (spikingjelly SynOpCounter: for each
         input spike, the weights it actually reaches, zero padding included) - not rate x dense.
  MAC:   multiply-accumulates of conv / linear / matmul with non-binary operands (spikingjelly MACCounter rules
         without its BatchNorm rule: BN is assumed folded into the preceding conv; element-wise ops not counted).
         Networks without spiking neurons (ANN teachers) are counted densely: every conv/linear/matmul is a MAC.
  The first (image) conv is counted as often as it actually processes the image: once for SpikerIR/ESDNet (they
  repeat its output over T), T times for a net that convolves the image repeated T times; the report gives the
  measured count.
  A layer whose input is all zeros (possible in untrained nets) cannot be told apart from a silent spike layer;
  it costs 0 and is listed with kind 'silent'.
  Multi-level spikes (k / L, k = 0..L: neurons.MultiLevelSpikeNode, e.g. VLIF's L = 4): hardware model "k
  accumulates" - a level-k spike is k unit spikes (the 1/L is folded into the weights), so a layer reading such
  spikes costs k SynOps per weight each spike reaches, not a MAC; their firing rate is the mean k / L and the
  report lists each level's occupancy (share of neuron outputs at k = 0..L). A conv input is recognised as multi-
  level by its values (all k / L, not all 0 / 1); one holding only 0 and 1 counts as binary spikes.
Firing rates come from forward hooks in a separate pass (hooks running inside the counting mode would be counted).
Counts are for one forward pass of the whole batch; energies are also given per image.
Both passes run the network's inference copy (``spikerir_plugin.inference``: fused neuron loops, frozen layers with the
same names), which runs the same convolutions on the same spikes as the network in eval mode, so every count and
firing rate equals that of the network itself (tested); it only makes the report faster.
"""
import argparse
import json
import os
import sys
from math import prod

import numpy as np
import torch
from torch import nn

from spikerir_plugin.archs.neurons import check_stateless
from spikerir_plugin.losses.energy_loss import E_AC_PJ, spiking_neuron_types
from spikerir_plugin.utils import console
from spikerir_plugin.utils.atomic import atomic_savefig, atomic_write_text
from spikerir_plugin.inference import inference_network, keep_freed_memory

E_MAC_PJ = 4.6  # pJ per MAC (45 nm); E_AC_PJ, per SynOp, is the energy loss's: one figure for both
_WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
                  nn.Linear)


def _is_binary(t):
    return t.dtype == torch.bool or bool(((t == 0) | (t == 1)).all())


def _spike_levels(t, levels):
    """L if every value of t is k / L for an integer k in 0..L (some L of ``levels``), else None. A tensor of only
    0 and 1 counts as binary spikes (one accumulate each), never as multi-level ones."""
    if t.dtype == torch.bool or not t.is_floating_point() or _is_binary(t):
        return None
    for n in levels:
        k = t.double() * n
        if bool(((k - k.round()).abs() < 1e-6).all() and (k >= 0).all() and (k <= n + 1e-6).all()):
            return n
    return None


def _multi_level_rules(levels, syn_rule, mac_rule):
    """Convolution rules for SynOp and MAC counters under the "k accumulates" model (module docstring): an input of
    multi-level spikes k / L costs sum over spikes of k x (weights reached) SynOps and no MAC."""
    def synops(args, kwargs, out):
        x, w = args[0], args[1]
        n = _spike_levels(x, levels) if levels else None
        if n is None:
            return syn_rule(args, kwargs, out)
        outside_counter = torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(torch._C.DispatchKey.Python))
        with torch.no_grad(), outside_counter:  # k per input element times the weights it reaches, summed
            reached = torch.ops.aten.convolution.default((x.double() * n).round(),
                                                         torch.ones_like(w, dtype=torch.float64), None, *args[3:9])
        return int(reached.sum().item())

    def macs(args, kwargs, out):
        return 0 if levels and _spike_levels(args[0], levels) is not None else mac_rule(args, kwargs, out)
    return synops, macs


# ---------------------------------------------------------------------------------------------- dense MAC rules
def _dense_conv(args, _kwargs, out):
    x, w, transposed = args[0], args[1], args[6]
    c_out, c_in, *kernel = w.shape  # grouped: c_in is per group; transposed: (C_in, C_out/groups)
    spatial = x.shape[2:] if transposed else out.shape[2:]
    return c_in * prod(kernel) * prod(spatial) * c_out * x.shape[0]


def _dense_mm(args, _kwargs, _out):
    (m, k), n = args[0].shape, args[1].shape[1]
    return m * k * n


def _dense_addmm(args, kwargs, out):
    return _dense_mm(args[1:], kwargs, out)


def _dense_bmm(args, _kwargs, _out):
    (b, m, k), n = args[0].shape, args[1].shape[2]
    return b * m * k * n


def _dense_baddbmm(args, kwargs, out):
    return _dense_bmm(args[1:], kwargs, out)


def _make_counters(spiking, levels=()):
    from spikingjelly.activation_based.op_counter import MACCounter, SynOpCounter
    aten = torch.ops.aten
    mac = MACCounter()
    mac.rules.pop(aten.native_batch_norm.default, None)
    if not spiking:
        mac.rules.update({aten.convolution.default: _dense_conv, aten.mm.default: _dense_mm,
                          aten.addmm.default: _dense_addmm, aten.bmm.default: _dense_bmm,
                          aten.baddbmm.default: _dense_baddbmm})
        return None, mac
    syn = SynOpCounter()
    if levels:
        conv = aten.convolution.default
        syn.rules[conv], mac.rules[conv] = _multi_level_rules(levels, syn.rules[conv], mac.rules[conv])
    return syn, mac


# ------------------------------------------------------------------------------------------------------- inputs
def make_input(size=256, batch=1, image=None, sigma=0.0, seed=0, channels=3):
    """[batch, channels, h, w] float in [0, 1] (size: int or (h, w)): a real photo (default scikit-image's
    astronaut, then coffee, chelsea, rocket for further batch entries) or the given image file, resized; grey when
    channels is 1; optional Gaussian noise of std `sigma` in 0-255 units."""
    import cv2
    h, w = (size, size) if isinstance(size, int) else size
    if channels not in (1, 3):
        raise ValueError(f'channels must be 1 or 3, got {channels!r}')
    if image is not None:
        img = cv2.imread(image, cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(f'cannot read image {image!r}')
        photos = [img[..., ::-1]] * batch
    else:
        from skimage import data as skdata
        pool = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket()]
        photos = [pool[i % len(pool)] for i in range(batch)]
    imgs = [cv2.resize(np.ascontiguousarray(p), (w, h), interpolation=cv2.INTER_AREA) for p in photos]
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255.
    if channels == 1:
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    if sigma:
        g = torch.Generator().manual_seed(seed)
        x = x + torch.randn(x.shape, generator=g) * (sigma / 255.)
    return x


# ------------------------------------------------------------------------------------------------------ measuring
def _hook_pass(net, x, neuron_types, occupancy=None):
    """Forward with hooks: spiking-neuron output rates, weight-layer input statistics, module call order; the
    level counts (k = 0..L) of multi-level neurons go into ``occupancy``."""
    names = {m: n for n, m in net.named_modules()}
    order, neurons, layers, handles = {}, {}, {}, []
    occupancy = {} if occupancy is None else occupancy

    def pre_hook(m, _inp):
        order.setdefault(names[m], len(order))

    def neuron_hook(m, _inp, out):
        s = neurons.setdefault(names[m], [0.0, 0])
        s[0] += float(out.detach().double().sum())
        s[1] += out.numel()
        n = getattr(m, 'levels', None)
        if isinstance(n, int) and n > 1:
            k = (out.detach().double() * n).round().clamp(0, n).long().flatten()
            counts = torch.bincount(k, minlength=n + 1).tolist()
            occupancy[names[m]] = [a + b for a, b in zip(occupancy.get(names[m], [0] * (n + 1)), counts)]

    def layer_hook(m, inp, _out):
        t = inp[0].detach()
        s = layers.setdefault(names[m], {'ones': 0.0, 'numel': 0, 'binary': True, 'zero': True})
        s['binary'] = s['binary'] and _is_binary(t)
        s['zero'] = s['zero'] and not bool(t.any())
        s['ones'] += float(t.double().sum())
        s['numel'] += t.numel()

    for m in net.modules():
        handles.append(m.register_forward_pre_hook(pre_hook))
        if isinstance(m, neuron_types):
            handles.append(m.register_forward_hook(neuron_hook))
        elif isinstance(m, _WEIGHT_LAYERS):
            handles.append(m.register_forward_hook(layer_hook))
    try:
        net(x)
    finally:
        for h in handles:
            h.remove()
    return order, neurons, layers


def _self_counts(net, counter):
    """Per module: ops recorded in its own scope minus those of its nearest recorded descendants. spikingjelly
    records each op in every *active* enclosing scope ('<RootClass>.<qualified name>'); containers that are never
    called (ModuleList) or sub-modules used only through a parent's attributes never become scopes."""
    if counter is None:
        return {}
    root = type(net).__name__
    totals = {}
    for scope, ops in counter.get_counts().items():
        if scope == root:
            totals[''] = sum(ops.values())
        elif scope.startswith(root + '.'):
            totals[scope[len(root) + 1:]] = sum(ops.values())
    own = dict(totals)
    for name, total in totals.items():
        parent = name
        while parent:
            parent = parent.rpartition('.')[0]
            if parent in totals:
                own[parent] -= total
                break
    return own


def measure_energy(net, input_shape=(1, 3, 256, 256), inputs=None, e_mac=E_MAC_PJ, e_ac=E_AC_PJ,
                   inference_copy=True):
    """Measure one network under torch.no_grad (the net is moved to CPU; its inference copy is measured, or with
    ``inference_copy=False`` the net itself in eval mode). Returns a JSON-serialisable dict:
    layers (per layer: name, type, kind, fr_in, synops, macs, energy_pj), neurons ({name: firing rate}),
    totals, first_layer (name and how many times it processed the input image), convention."""
    from spikingjelly.activation_based.op_counter import DispatchCounterMode
    b, c, h, w = input_shape
    x = inputs if inputs is not None else make_input((h, w), b, channels=c)
    net = net.cpu()
    runner = inference_network(net) if inference_copy else net.eval()
    neuron_types = spiking_neuron_types()
    spiking = any(isinstance(m, neuron_types) for m in runner.modules())
    with torch.no_grad():
        occupancy = {}
        order, neurons, layers = _hook_pass(runner, x, neuron_types, occupancy)
        check_stateless(runner)  # the counting pass below must see the same input-only forward
        levels = sorted({m.levels for m in runner.modules() if isinstance(m, neuron_types)
                         and isinstance(getattr(m, 'levels', None), int) and m.levels > 1})
        syn, mac = _make_counters(spiking, levels)
        with DispatchCounterMode([c for c in (syn, mac) if c is not None]):
            runner(x)
    own_syn, own_mac = _self_counts(runner, syn), _self_counts(runner, mac)

    modules, arch_modules = dict(runner.named_modules()), dict(net.named_modules())
    rows = []
    for n in sorted(modules, key=lambda k: order.get(k, len(order))):
        s, m_ = own_syn.get(n, 0), own_mac.get(n, 0)
        stat = layers.get(n)
        if not (s or m_ or stat):
            continue
        binary_in = bool(stat and stat['binary'])
        if s and m_:
            kind = 'MAC+SynOp'
        elif s or m_:
            kind = 'SynOp' if s else 'MAC'
        elif stat and stat['zero']:
            kind = 'silent'  # all-zero input costs 0 under both counters, whether it was meant as spikes or not
        else:
            kind = 'SynOp' if binary_in else 'MAC'
        fr_in = stat['ones'] / stat['numel'] if binary_in and stat['numel'] else None
        rows.append({'name': n or '(root)', 'type': type(arch_modules.get(n, modules[n])).__name__, 'kind': kind,
                     'fr_in': fr_in,
                     'synops': int(s), 'macs': int(m_), 'energy_pj': e_mac * m_ + e_ac * s})

    total_syn = syn.get_total() if syn is not None else 0
    total_mac = mac.get_total()
    first = next((r for r in rows if r['name'] in layers), None)
    first_passes = layers[first['name']]['numel'] / x.numel() if first else 0
    spikes = sum(v[0] for v in neurons.values())
    elems = sum(v[1] for v in neurons.values())
    energy_mj = (e_mac * total_mac + e_ac * total_syn) * 1e-9
    return {
        'spiking': spiking,
        'T': getattr(net, 'T', None),
        'input_shape': list(x.shape),
        'params': sum(p.numel() for p in net.parameters()),
        'layers': rows,
        'neurons': {n: v[0] / v[1] for n, v in sorted(neurons.items(), key=lambda kv: order.get(kv[0], 0))},
        'neuron_levels': {n: [c / sum(v) for c in v] for n, v in sorted(occupancy.items(),
                                                                         key=lambda kv: order.get(kv[0], 0))},
        'first_layer': {'name': first['name'] if first else None, 'image_passes': first_passes},
        'totals': {'synops': int(total_syn), 'macs': int(total_mac), 'mean_firing_rate': spikes / elems if elems
                   else None, 'energy_mJ': energy_mj, 'energy_mJ_per_image': energy_mj / x.shape[0]},
        'convention': {'e_mac_pJ': e_mac, 'e_ac_pJ': e_ac, 'formula': 'E = e_mac*MAC + e_ac*SynOp',
                       'text': convention_text(first['name'] if first else None, first_passes, spiking, levels)},
    }


def convention_text(first_name, passes, spiking, levels=()):
    lines = ['E = e_mac*MAC + e_ac*SynOp; SynOps are exact spike-driven accumulations (spikingjelly SynOpCounter), '
             'MACs are conv/linear/matmul with non-binary operands (BN assumed folded, element-wise ops not counted).']
    if levels:
        lines.append(f'Multi-level spikes k/L (L = {", ".join(map(str, levels))}) are counted as k accumulates: '
                     'a conv reading them costs k SynOps per weight each spike reaches (k unit spikes, 1/L folded '
                     'into the weights); their firing rate is the mean k/L.')
    if first_name is not None:
        times = f'{passes:g} time' + ('' if passes == 1 else 's')
        how = (f'processes the input image {times} per forward pass and is counted {times} (SpikerIR/ESDNet run it '
               'once and repeat its output over T; a net that convolves the image repeated T times pays T times)'
               if spiking else f'is counted {times} (ANN: dense MACs everywhere)')
        lines.append(f'First layer {first_name!r} {how}.')
    return ' '.join(lines)


# -------------------------------------------------------------------------------------------------------- output
def format_report(student, teacher=None, title=''):
    out = [f'== energy report {title}'.rstrip(), student['convention']['text'],
           f"constants: e_mac = {student['convention']['e_mac_pJ']} pJ, e_ac = {student['convention']['e_ac_pJ']} pJ;"
           f" input {student['input_shape']}", '']
    for label, r in (('student', student), ('teacher', teacher)):
        if r is None:
            continue
        out.append(f"-- {label} ({'spiking, T=' + str(r['T']) if r['spiking'] else 'ANN'}, "
                   f"{r['params']:,} parameters)")
        out.append(f"{'layer':44s} {'kind':9s} {'fr_in':>7s} {'count':>15s} {'energy uJ':>11s}")
        for row in r['layers']:
            fr = f"{row['fr_in']:.4f}" if row['fr_in'] is not None else '-'
            out.append(f"{row['name'][:44]:44s} {row['kind']:9s} {fr:>7s} {row['synops'] + row['macs']:>15,d} "
                       f"{row['energy_pj'] * 1e-6:>11.3f}")
        t = r['totals']
        rate = f"{t['mean_firing_rate']:.4f}" if t['mean_firing_rate'] is not None else '-'
        out.append(f"total: SynOps {t['synops']:,}  MACs {t['macs']:,}  mean firing rate {rate}  "
                   f"energy {t['energy_mJ']:.4f} mJ ({t['energy_mJ_per_image']:.4f} mJ/image)")
        if r['neurons']:
            out.append('firing rates: ' + ', '.join(f'{n}={v:.4f}' for n, v in r['neurons'].items()))
        if r.get('neuron_levels'):
            out.append('level occupancy of the multi-level neurons (share of outputs at k = 0..L): ' + ', '.join(
                f"{n}=[{' '.join(f'{p:.3f}' for p in v)}]" for n, v in r['neuron_levels'].items()))
        out.append('')
    if teacher is not None:
        out.append(f'energy ratio teacher/student: {energy_ratio(student, teacher):.2f}')
    return '\n'.join(out)


def budget_line(energy_opt, student):
    """The options' train.energy_opt against the measured network: the budget scaled to the report's image size and
    the spike-driven part it constrains (e_ac x SynOps per image), or None without a budget."""
    from spikerir_plugin.losses.energy_loss import check_energy_opt
    if not energy_opt:
        return None
    spec = check_energy_opt(energy_opt)
    batch, _, h, w = student['input_shape']
    synops = student['totals']['synops'] / batch
    e_ac = student['convention']['e_ac_pJ']
    if spec.get('target_mj') is None and spec.get('target_synops') is None:
        return (f"train.energy_opt: a penalty (loss_weight {spec.get('loss_weight', 1.0)}) on the spike-driven "
                f"energy, here {synops * e_ac * 1e-9:.4f} mJ per image ({synops:,.0f} SynOps)")
    scale = h * w / int(spec.get('image_size', 256)) ** 2
    if spec.get('target_mj') is not None:
        have, budget, unit = synops * e_ac * 1e-9, float(spec['target_mj']) * scale, 'mJ'
    else:
        have, budget, unit = synops, float(spec['target_synops']) * scale, 'SynOps'
    verdict = 'under it' if have <= budget else f'{have / budget - 1:.0%} over it'
    return (f"train.energy_opt budget: {budget:,.4g} {unit} of spike-driven energy per {h}x{w} image (the options' "
            f"{spec.get('target_mj', spec.get('target_synops'))} per {spec.get('image_size', 256)}^2, scaled); "
            f'this network: {have:,.4g} {unit}, {verdict}')


def energy_ratio(student, teacher):
    s = student['totals']['energy_mJ']
    return teacher['totals']['energy_mJ'] / s if s else float('inf')


def plot_report(student, path, title=''):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rates, rows = student['neurons'], student['layers']
    width = max(8.0, 0.22 * max(len(rates), len(rows)))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(width, 8))
    ax1.bar(range(len(rates)), list(rates.values()), color='tab:orange')
    ax1.set_xticks(range(len(rates)), list(rates), rotation=90, fontsize=6)
    ax1.set_ylabel('firing rate')
    ax1.set_title(f'{title} spiking-neuron firing rates'.strip())
    colors = [{'SynOp': 'tab:blue', 'silent': 'tab:gray'}.get(r['kind'], 'tab:red') for r in rows]
    ax2.bar(range(len(rows)), [r['energy_pj'] * 1e-6 for r in rows], color=colors)
    ax2.set_xticks(range(len(rows)), [r['name'] for r in rows], rotation=90, fontsize=6)
    ax2.set_ylabel('energy (uJ)')
    ax2.set_title(f"per-layer energy (blue SynOp, red MAC, grey silent); total {student['totals']['energy_mJ']:.4f} mJ")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------------------ CLI
def build_from_options(opt, which='g', ckpt=None, param_key=None):
    """Network `network_<which>` of a parsed options dict, with weights from ckpt (the --ckpt option, named in
    errors) or path.pretrain_network_<which> (random init when neither is given)."""
    from spikerir_plugin.utils.options import network_checkpoint, network_from_options
    path_ckpt, path_key, strict = network_checkpoint(opt, which)
    if not (ckpt or path_ckpt):
        console.warn(f'note: no checkpoint for network_{which}; measuring randomly initialised weights')
    return network_from_options(opt.get(f'network_{which}'), f'network_{which}', ckpt or path_ckpt,
                                param_key or path_key, strict, which, option='--ckpt' if ckpt else None)


def main(argv=None):
    import yaml
    import spikerir_plugin  # noqa: F401  (registers the plugin archs)
    p = argparse.ArgumentParser(prog='spikerir-energy', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('-opt', '--opt', required=True, help='options YAML with network_g (and optionally network_t)')
    p.add_argument('--ckpt', default=None, help='student checkpoint (default: path.pretrain_network_g)')
    p.add_argument('--param-key', default=None, help='state-dict key in the checkpoint (default: path.param_key_g, '
                                                       'else params_ema, falling back to params)')
    p.add_argument('--no-teacher', action='store_true', help='skip network_t even if the options define it')
    p.add_argument('--teacher-from', default=None,
                   help="options YAML whose network_t is the teacher to compare with, instead of -opt's (e.g. the "
                        "twin's options, whose teacher is the ANN the twin learnt from)")
    p.add_argument('--size', type=int, default=256)
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--channels', type=int, default=3, help='input channels (1 for grey Gaussian-denoising nets)')
    p.add_argument('--image', default=None, help='input image file (default: scikit-image photos)')
    p.add_argument('--sigma', type=float, default=0.0, help='add Gaussian noise of this std (0-255) to the input')
    p.add_argument('--e-mac', type=float, default=E_MAC_PJ, help='pJ per MAC (default 4.6)')
    p.add_argument('--e-ac', type=float, default=E_AC_PJ, help='pJ per SynOp (default 0.9)')
    p.add_argument('--out', default=None, help='output folder (default results/energy/<name>)')
    a = p.parse_args(argv)
    keep_freed_memory()  # the measured forwards run on the CPU (inference/cpu_memory.py)
    try:
        with open(a.opt) as f:
            opt = yaml.safe_load(f)
        if not isinstance(opt, dict) or 'network_g' not in opt:
            raise KeyError(f'{a.opt!r} has no network_g section; top-level keys: '
                           f'{sorted(opt) if isinstance(opt, dict) else type(opt).__name__}')
        x = make_input(a.size, a.batch, a.image, a.sigma, channels=a.channels)
        student = measure_energy(build_from_options(opt, 'g', a.ckpt, a.param_key), inputs=x, e_mac=a.e_mac,
                                 e_ac=a.e_ac)
        teacher, teacher_opt = None, opt
        if a.teacher_from:
            with open(a.teacher_from) as f:
                teacher_opt = yaml.safe_load(f)
            if not isinstance(teacher_opt, dict) or not teacher_opt.get('network_t'):
                raise KeyError(f'--teacher-from {a.teacher_from!r} has no network_t section')
        if teacher_opt.get('network_t') and not a.no_teacher:
            teacher = measure_energy(build_from_options(teacher_opt, 't'), inputs=x, e_mac=a.e_mac, e_ac=a.e_ac)
    except (OSError, KeyError, ValueError) as e:
        p.exit(2, f'spikerir-energy: error: {e.args[0] if isinstance(e, KeyError) and e.args else e}\n')
    name = opt.get('name', os.path.splitext(os.path.basename(a.opt))[0])
    out_dir = a.out or os.path.join('results', 'energy', name)
    os.makedirs(out_dir, exist_ok=True)
    report = format_report(student, teacher, name)
    budget = budget_line((opt.get('train') or {}).get('energy_opt'), student)
    if budget:
        report += '\n' + budget
    console.info(report)
    result = {'name': name, 'options': os.path.abspath(a.opt), 'student': student, 'teacher': teacher,
              'ratio_teacher_over_student': energy_ratio(student, teacher) if teacher else None,
              'budget': budget}
    atomic_write_text(os.path.join(out_dir, 'energy.json'), json.dumps(result, indent=2))
    atomic_write_text(os.path.join(out_dir, 'energy.txt'), report + '\n')
    plot_report(student, os.path.join(out_dir, 'energy.png'), name)
    console.info(f'wrote {out_dir}/energy.json, energy.txt, energy.png')
    return 0


if __name__ == '__main__':
    sys.exit(main())
