"""SynOpsLoss: the spike-driven energy of a network's training forward as a differentiable loss (``train.energy_opt``).

The penalty is the energy model of ``spikerir-energy`` (tools/energy_report.py) evaluated on the spikes of the
training forward itself, read by forward hooks on the spiking neurons (no second forward):

    SynOps = sum over neurons n, over the weight layers r reading n's output, of  sum_p s_n(p) * reach_r(p)

with s_n(p) the neuron's output at position p (a multi-level spike k / L counts k, as in the report) and reach_r(p)
the number of weights of r one spike at p reaches: out_channels / groups times the kernel taps that cover p (the
full kernel in the interior; fewer at the borders, where a tap falls on zero padding; for stride s on average
taps / s per dimension). reach_r is the exact per-position count of the convolution itself (the gradient of a
ones-kernel convolution of a ones input, computed once per input size), so the penalty equals spikingjelly's
SynOpCounter count of the same layers on the same spikes. A Linear layer reading spikes costs out_features per
spike.

Which layer reads which neuron is learnt once, from the first recorded forward: a conv / linear whose input is a
neuron's output tensor (or a view of it with the same trailing channel and spatial dimensions, e.g. a multi-step
[T, B, C, H, W] flattened to [T*B, C, H, W]) reads that neuron. Spikes that reach a weight layer through other
operations (a concatenation, a matmul of spike tensors in attention) are not part of the penalty;
``uncovered`` lists the weight layers whose input was binary but matched no neuron. MACs (layers on analog inputs,
such as the first conv on the image) are fixed by the arch and not penalised.

Value (per image, the mean over the batch of this rank, like the other losses; DDP then averages gradients):
    no target:        loss_weight * SynOps per image          (unit: synops)
                      loss_weight * e_ac * SynOps per image    (unit: mJ, default; e_ac in pJ)
    target_synops T:  loss_weight * max(0, SynOps per image - T * h * w / image_size ** 2)
    target_mj E:      loss_weight * max(0, mJ per image - E * h * w / image_size ** 2)
for training crops of h x w pixels: a budget is given per image of image_size x image_size (default 256, the
report's default) and scaled by pixel count to the crop. ``target_mj`` is the spike-driven part of the report's
energy (e_ac x SynOps); the report's MAC energy comes on top of it.

Use: ``loss.attach(net)`` once (the bare network), then per step ``with loss.recording(): output = net(x)`` and
``loss()`` after it. Only the first forward of ``net`` inside ``recording()`` is recorded (a later forward in the
same step, e.g. distillation's extra inputs, is not); forwards outside it (validation, activation-checkpoint
recomputation in backward) are ignored.
"""
import contextlib
import difflib
import inspect
from math import prod

import torch
import torch.nn.functional as F
from torch import nn

from basicsr.utils.registry import LOSS_REGISTRY

E_AC_PJ = 0.9  # pJ per SynOp (45 nm), the figure spikerir-energy reports with too
UNITS = ('mJ', 'synops')
_CONVS = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3, nn.ConvTranspose1d: 1, nn.ConvTranspose2d: 2,
          nn.ConvTranspose3d: 3}


def spiking_neuron_types():
    """The module types whose outputs are spikes (counted by this loss and by spikerir-energy)."""
    from spikingjelly.activation_based.neuron import BaseNode
    from spikerir_plugin.archs.neurons import MultiLevelSpikeNode
    from spikerir_plugin.inference.layers import InferenceNeuron
    return (BaseNode, InferenceNeuron, MultiLevelSpikeNode)


def _spatial_dims(module):
    """Trailing dimensions of the input that a weight layer's reach depends on (0 for Linear), or None."""
    if isinstance(module, nn.Linear):
        return 0
    for cls, n in _CONVS.items():
        if isinstance(module, cls):
            return n
    return None


def reach_map(module, spatial):
    """[*spatial] float64: how many weights of ``module`` one unit input at each position reaches (per input
    channel; out_channels / groups times the kernel taps covering that position), for an input of size
    ``spatial``. Exact, borders and strides included: the gradient of the convolution of a ones input with a ones
    kernel."""
    n = len(spatial)
    if n == 0:
        return torch.tensor(float(module.out_features), dtype=torch.float64)
    transposed = isinstance(module, nn.modules.conv._ConvTransposeNd)
    x = torch.ones((1, 1, *spatial), dtype=torch.float64, requires_grad=True)
    w = torch.ones((1, 1, *module.kernel_size), dtype=torch.float64)
    with torch.enable_grad():
        y, padding = x, module.padding
        if not transposed and module.padding_mode != 'zeros':
            y, padding = F.pad(x, module._reversed_padding_repeated_twice, mode=module.padding_mode), 0
        conv = getattr(F, f'conv_transpose{n}d' if transposed else f'conv{n}d')
        if transposed:
            out = conv(y, w, None, module.stride, padding, module.output_padding, 1, module.dilation)
        else:
            out = conv(y, w, None, module.stride, padding, module.dilation)
        grad, = torch.autograd.grad(out.sum(), x)
    return grad[0, 0] * (module.out_channels / module.groups)


def check_energy_opt(spec):
    """``train.energy_opt`` without its ``schedule``, validated: a mapping whose keys are SynOpsLoss arguments
    (unknown keys named with the nearest valid ones); ``type`` defaults to SynOpsLoss."""
    if not isinstance(spec, dict):
        raise ValueError(f'train.energy_opt must be a mapping (e.g. {{type: SynOpsLoss, loss_weight: 0.1, '
                         f'target_mj: 0.15}}), got {spec!r}')
    spec = dict(spec)
    spec.setdefault('type', 'SynOpsLoss')
    if spec['type'] != 'SynOpsLoss':
        raise ValueError(f'train.energy_opt.type: {spec["type"]!r} is not an energy loss; valid: SynOpsLoss')
    valid = ['type', 'schedule'] + [p for p in inspect.signature(SynOpsLoss.__init__).parameters if p != 'self']
    unknown = [k for k in spec if k not in valid]
    if unknown:
        lines = []
        for key in unknown:
            near = difflib.get_close_matches(str(key), valid, n=3, cutoff=0.6)
            lines.append(f'train.energy_opt.{key}' + (f' (did you mean {" or ".join(near)}?)' if near else ''))
        raise ValueError(f'unknown option key{"s" if len(lines) > 1 else ""}: {"; ".join(lines)}; valid keys of '
                         f'train.energy_opt: {", ".join(valid)}')
    return spec


@LOSS_REGISTRY.register()
class SynOpsLoss(nn.Module):
    """Differentiable SynOps / spike energy per image of the recorded training forward; see the module docstring.

    Args:
        loss_weight (float): multiplier. Default: 1.0.
        unit (str): 'mJ' (e_ac x SynOps, the default) or 'synops'; with a target, the target's unit.
        target_mj (float): budget in mJ per image of image_size x image_size: the loss is the excess over it.
        target_synops (float): budget in SynOps per image of image_size x image_size (instead of target_mj).
        image_size (int): side of the image the budget is given for. Default: 256.
        e_ac (float): pJ per SynOp. Default: 0.9 (the report's 45 nm constant).
    """

    def __init__(self, loss_weight=1.0, unit=None, target_mj=None, target_synops=None, image_size=256,
                 e_ac=E_AC_PJ):
        super().__init__()
        if target_mj is not None and target_synops is not None:
            raise ValueError('SynOpsLoss: set one of target_mj and target_synops, not both')
        target_unit = 'mJ' if target_mj is not None else 'synops' if target_synops is not None else None
        if unit is not None and unit not in UNITS:
            raise ValueError(f'SynOpsLoss: unknown unit {unit!r}; valid: {", ".join(UNITS)}')
        if unit is not None and target_unit is not None and unit != target_unit:
            raise ValueError(f'SynOpsLoss: unit {unit!r} does not match the target (target_'
                             f'{"mj" if target_unit == "mJ" else "synops"} is in {target_unit})')
        target = target_mj if target_mj is not None else target_synops
        if target is not None and not (isinstance(target, (int, float)) and target > 0):
            raise ValueError(f'SynOpsLoss: the target must be a number > 0, got {target!r}')
        if not (isinstance(image_size, int) and image_size > 0):
            raise ValueError(f'SynOpsLoss: image_size must be a positive int (pixels), got {image_size!r}')
        self.loss_weight = float(loss_weight)
        self.unit = target_unit or unit or 'mJ'
        self.target = None if target is None else float(target)
        self.image_size = image_size
        self.e_ac = float(e_ac)
        self.net = None
        self.readers = {}          # neuron name -> [(reader name, trailing dims)], learnt from the first record
        self.learnt = False        # whether readers (and uncovered) have been learnt
        self.uncovered = []        # weight layers with spike inputs that matched no neuron
        self.measured = {}         # last record: synops and firing_rate per image (detached tensors)
        self._handles, self._probe_handles, self._reach = [], [], {}
        self._armed = self._active = False
        self._record = None

    # ------------------------------------------------------------------ hooks
    def attach(self, net):
        """Hook the spiking neurons (and the root) of ``net``; returns self."""
        self.detach_hooks()
        self.net = net
        self._names = {m: n for n, m in net.named_modules()}
        self._modules_by_name = dict(net.named_modules())
        neurons = spiking_neuron_types()
        self._neurons = {n: m for n, m in net.named_modules() if isinstance(m, neurons)}
        if not self._neurons:
            raise ValueError(f'train.energy_opt: {type(net).__name__} has no spiking neurons (spikingjelly nodes or '
                             'MultiLevelSpikeNode); an energy penalty needs a spiking network')
        # plain functions, not bound methods: a deepcopy of the network (its inference copy) copies them as they are
        # instead of copying this loss, and the hooks ignore modules that are not the attached network's
        self._handles.append(net.register_forward_pre_hook(lambda m, args: self._root_pre_hook(m, args)))
        self._handles.append(net.register_forward_hook(lambda m, args, out: self._root_hook(m, args, out)))
        for m in self._neurons.values():
            self._handles.append(m.register_forward_hook(lambda m, args, out: self._neuron_hook(m, args, out)))
        return self

    def detach_hooks(self):
        for h in self._handles:
            h.remove()
        self._handles = []

    @contextlib.contextmanager
    def recording(self):
        """Record the first forward of the attached network inside this block."""
        self._armed, self._record = True, None
        try:
            yield self
        finally:
            self._armed = self._active = False
            self._remove_probe()

    def _remove_probe(self):
        for h in self._probe_handles:
            h.remove()
        self._probe_handles = []

    def _root_pre_hook(self, module, args):
        if self._armed and self._record is None and module is self.net:
            x = args[0]
            self._record = {'batch': x.shape[0], 'pixels': prod(x.shape[-2:]), 'neurons': [], 'inputs': []}
            self._active = True
            if not self.learnt:  # the first record also learns which layer reads which neuron
                self._probe_handles = [m.register_forward_hook(lambda m, args, out: self._layer_hook(m, args, out))
                                       for m in self.net.modules() if _spatial_dims(m) is not None]

    def _root_hook(self, module, _args, _out):
        if self._active and module is self.net:
            self._active = False
            self._remove_probe()

    def _layer_hook(self, module, args, _out):
        if self._active and module in self._names and args and torch.is_tensor(args[0]):
            self._record['inputs'].append((self._names[module], args[0]))

    def _neuron_hook(self, module, _args, out):
        name = self._names.get(module)
        if not self._active or name is None:
            return
        levels = getattr(module, 'levels', None)
        scale = levels if isinstance(levels, int) and levels > 1 else 1  # a level-k spike k/L counts k
        if self.learnt:
            maps = {n: self._spike_map(out, n) for n in {n for _, n in self.readers.get(name, ())}}
            self._record['neurons'].append((name, scale, maps, out.detach().sum(dtype=torch.float32), out.numel()))
        else:
            self._record['neurons'].append((name, scale, out, None, out.numel()))

    @staticmethod
    def _spike_map(out, n):
        """The output summed over all but its last ``n`` (spatial) dimensions, the time, batch and channel ones: all a
        layer's reach needs, and small, so the full spike tensor is not kept alive for the loss."""
        dims = tuple(range(out.dim() - n))
        return out.sum(dim=dims, dtype=torch.float32) if dims else out.float()

    def _learn_readers(self):
        """neuron -> readers from the recorded tensors: a weight layer reads a neuron if its input is the neuron's
        output or a view of it (same storage and size) with the same trailing channel and spatial dimensions."""
        outputs = {}
        for name, _, out, _, _ in self._record['neurons']:
            outputs.setdefault((out.untyped_storage().data_ptr(), out.numel()), []).append((name, out))
        readers, uncovered = {}, []
        for layer, x in self._record['inputs']:
            n = _spatial_dims(self._modules_by_name[layer])
            match = None
            for name, out in outputs.get((x.untyped_storage().data_ptr(), x.numel()), ()):
                k = n + 1  # channel + spatial dims of a conv, the feature dim of a linear
                if tuple(x.shape[x.dim() - k:]) == tuple(out.shape[out.dim() - k:]):
                    match = name
                    break
            if match is not None:
                pair = (layer, n)
                if pair not in readers.setdefault(match, []):
                    readers[match].append(pair)
            elif layer not in uncovered and self._is_spikes(x):
                uncovered.append(layer)
        self.readers, self.uncovered, self.learnt = readers, uncovered, True
        self._record['neurons'] = [(name, scale, {n: self._spike_map(out, n) for n in {n for _, n in
                                                                                       readers.get(name, ())}},
                                    out.detach().sum(dtype=torch.float32), numel)
                                   for name, scale, out, _, numel in self._record['neurons']]
        self._record['inputs'] = []

    def _is_spikes(self, x):
        """Whether a weight layer's input holds spikes as the report sees them: not all zero, and every value 0 or 1,
        or k / L for the levels L of the network's multi-level neurons."""
        x = x.detach()
        if not (x.numel() and x.is_floating_point() and bool(x.any())):
            return False
        levels = {1} | {m.levels for m in self._neurons.values() if isinstance(getattr(m, 'levels', None), int)}
        for n in sorted(levels):
            k = x.double() * n
            if bool(((k - k.round()).abs() < 1e-6).all() and (k >= 0).all() and (k <= n + 1e-6).all()):
                return True
        return False

    def _reach_of(self, layer, shape, device):
        key = (layer, shape, device)
        if key not in self._reach:
            self._reach[key] = reach_map(self._modules_by_name[layer], shape).to(device, torch.float32)
        return self._reach[key]

    # ------------------------------------------------------------------ value
    def forward(self, *_args, **_kwargs):
        """The penalty of the recorded forward (a scalar tensor); sets ``measured``."""
        record = self._record
        if record is None or not record['neurons']:
            raise RuntimeError('SynOpsLoss: no recorded forward; run the network inside `with loss.recording():` '
                               'after loss.attach(net)')
        if not self.learnt:
            self._learn_readers()
        synops, spikes, elements = 0.0, 0.0, 0
        for name, scale, maps, spike_sum, numel in record['neurons']:
            for layer, n in self.readers.get(name, ()):
                m = maps[n]
                synops = synops + scale * (m * self._reach_of(layer, tuple(m.shape[m.dim() - n:]) if n else (),
                                                              m.device)).sum()
            spikes, elements = spikes + spike_sum, elements + numel
        if not torch.is_tensor(synops):
            synops = spikes * 0.0  # no neuron feeds a weight layer: nothing to penalise
        per_image = synops / record['batch']
        self.measured = {'synops': per_image.detach(), 'firing_rate': (spikes / max(elements, 1)).detach()}
        value = per_image * (self.e_ac * 1e-9) if self.unit == 'mJ' else per_image
        if self.target is not None:
            budget = self.target * record['pixels'] / self.image_size ** 2
            value = torch.relu(value - budget)
        self._record = None
        return self.loss_weight * value

    def extra_repr(self):
        target = f', target={self.target} {self.unit} per {self.image_size}x{self.image_size}' if self.target else ''
        return f'loss_weight={self.loss_weight}, unit={self.unit}{target}, e_ac={self.e_ac}'
