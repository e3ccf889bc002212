"""Feature hints for ANN->SNN distillation: which layers, forward hooks that read them, and the adapters.

Archs declare the layers they offer as hints with ``hint_layers``: a method (or a class attribute) returning module
names, coarse to fine (e.g. SpikerIR's ``['decoder_level3', 'decoder_level2', 'decoder_level1']``). Any registered
arch, a user's included, can provide it; ``train.hint_layers`` in the options overrides the pairing.

A hint reads a module's output: a block's output (SpikerIR's ``decoder_level1``), a neuron's spikes (e.g.
``decoder_level1.0.residual.0``; averaged over T they are firing rates) or a tdBN's output (the neuron's input
current, e.g. ``decoder_level1.0.residual.2``). A name ending in ``:membrane`` reads the membrane potential of a
spikingjelly neuron instead (its ``v_seq``: the potential after each step's spike and reset).

The adapters are trained with the student; ``HintAdapters`` is a module of its own that the model wraps in DDP like
the student, so its gradients are all-reduced too, while the student stays the bare arch that basicsr saves, loads
and averages (EMA) as usual.
"""
import difflib

import torch
from torch import nn
from torch.nn import functional as F

from spikerir_plugin.archs.arch_util import input_channels
from spikerir_plugin.utils.snn import time_mean

_MAX_LISTED = 30
MEMBRANE = ':membrane'
ADAPTERS = ('conv1x1', 'conv3x3', 'mlp', 'identity')


def declared_hint_layers(net):
    """The module names ``net`` declares as hint layers (coarse to fine), or None if it declares none."""
    declared = getattr(net, 'hint_layers', None)
    if declared is None:
        return None
    names = declared() if callable(declared) else declared
    return [str(n) for n in names]


def default_hint_layers(student, teacher):
    """[[student, teacher], ...]: the finest levels both networks declare, paired from the finest upwards
    (SpikerIR's decoder_level1/2/3 sit at 1, 1/2, 1/4 of the input, as do a NAFNet's last three decoders).
    A ValueError asks for train.hint_layers when either arch declares none."""
    s, t = declared_hint_layers(student), declared_hint_layers(teacher)
    if not s or not t:
        missing = [type(n).__name__ for n, d in ((student, s), (teacher, t)) if not d]
        raise ValueError(
            f'train.hint_layers is required: {", ".join(missing)} declares no hint layers. Give a list of '
            '[student_module, teacher_module] pairs, or define `hint_layers()` on the arch (module names, coarse '
            'to fine).')
    k = min(len(s), len(t))
    return [[a, b] for a, b in zip(s[len(s) - k:], t[len(t) - k:])]


def parse_hint_layers(hint_layers):
    pairs = []
    for item in hint_layers:
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and all(isinstance(n, str) for n in item)):
            raise ValueError(f'train.hint_layers: each entry must be [student_module_name, teacher_module_name], '
                             f'got {item!r}')
        pairs.append((item[0], item[1]))
    if not pairs:
        raise ValueError('train.hint_layers is empty; remove train.hint_opt to train without feature hints')
    return pairs


def get_submodule(net, name, role):
    """net's submodule ``name``; an unknown name raises a KeyError listing close matches and valid names."""
    modules = dict(net.named_modules())
    if name in modules and name != '':
        return modules[name]
    valid = [n for n in modules if n]
    close = difflib.get_close_matches(name, valid, n=5, cutoff=0.5)
    shown = [n for n in valid if n.count('.') <= 1][:_MAX_LISTED]  # shallow names say most about the layout
    more = len(valid) - len(shown)
    hint = f' Did you mean: {", ".join(close)}?' if close else ''
    raise KeyError(f'train.hint_layers: {role} network {type(net).__name__} has no module {name!r}.{hint} '
                   f'Valid names include: {", ".join(shown)}' + (f' ... ({more} more)' if more > 0 else ''))


def _first_tensor(output):
    while isinstance(output, (tuple, list)):
        output = output[0]
    return output


def _tapped_module(net, name, role):
    """The module behind a hint name; ``<neuron>:membrane`` switches the neuron to keep its potentials."""
    if not name.endswith(MEMBRANE):
        return get_submodule(net, name, role)
    module = get_submodule(net, name[:-len(MEMBRANE)], role)
    if not hasattr(module, 'store_v_seq'):
        raise ValueError(f'train.hint_layers: {name!r}: {type(module).__name__} is not a spiking neuron; '
                         f'{MEMBRANE!r} reads the membrane potential of a spikingjelly neuron module (e.g. '
                         "'decoder_level1.0.residual.0:membrane')")
    module.store_v_seq = True
    return module


class FeatureTap:
    """Forward hooks that record the outputs (or, for ``name:membrane``, the membrane potentials) of named
    submodules while ``recording`` is True."""

    def __init__(self, net, names, role):
        self.names = list(names)
        self.recording = False
        self.features = {}
        self.handles = [_tapped_module(net, n, role).register_forward_hook(self._hook(n)) for n in self.names]

    def _hook(self, name):
        membrane = name.endswith(MEMBRANE)

        def hook(module, inputs, output):
            if membrane:  # read and drop the stored potentials (they hold the graph of this call)
                output, module.v_seq = module.v_seq, None
            if self.recording:
                self.features[name] = _first_tensor(output)
        return hook

    def run(self, fn, *args):
        """Call fn(*args) while recording; returns (fn's result, [features in ``names`` order])."""
        self.features, self.recording = {}, True
        try:
            result = fn(*args)
        finally:
            self.recording = False
        missing = [n for n in self.names if n not in self.features]
        if missing:
            raise RuntimeError(f'hint layers {missing} were not executed by the forward pass')
        feats = [self.features[n] for n in self.names]
        self.features = {}
        return result, feats

    def remove(self):
        for h in self.handles:
            h.remove()


def make_adapter(kind, in_channels, out_channels):
    """Student channels -> teacher channels: 'conv1x1' (FitNets' regressor), 'conv3x3', 'mlp' (1x1 conv, ReLU, 1x1
    conv, as BKDSNN's generation block) or 'identity' (no parameters; needs equal channel counts)."""
    if kind == 'conv1x1':
        return nn.Conv2d(in_channels, out_channels, 1)
    if kind == 'conv3x3':
        return nn.Conv2d(in_channels, out_channels, 3, padding=1)
    if kind == 'mlp':
        return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.ReLU(inplace=True),
                             nn.Conv2d(out_channels, out_channels, 1))
    if kind == 'identity':
        if in_channels != out_channels:
            raise ValueError(f'train.hint_adapter: identity needs equal channels, but a student hint has '
                             f'{in_channels} and its teacher hint {out_channels}; use conv1x1, conv3x3 or mlp')
        return nn.Identity()
    raise ValueError(f'train.hint_adapter: unknown adapter {kind!r}; valid: {", ".join(ADAPTERS)}')


class HintAdapters(nn.Module):
    """One adapter per hint layer (student channels -> teacher channels; ``make_adapter``, 1x1 conv by default).
    ``forward(features, sizes)`` averages each multi-step student feature over T (as the readout does), adapts it
    and resizes it to the teacher's size."""

    def __init__(self, in_channels, out_channels, kind='conv1x1'):
        super().__init__()
        self.adapters = nn.ModuleList(make_adapter(kind, ci, co) for ci, co in zip(in_channels, out_channels))

    def forward(self, features, sizes):
        hints = []
        for adapter, feat, size in zip(self.adapters, features, sizes):
            h = adapter(time_mean(feat))
            if tuple(h.shape[-2:]) != tuple(size):
                h = F.interpolate(h, size=tuple(size), mode='bilinear', align_corners=False)
            hints.append(h)
        return hints


@torch.no_grad()
def probe_shapes(net, tap, size, device):
    """Run net once (eval mode, dummy input) and return [(C, H, W)] of the tapped features (T averaged)."""
    was_training = net.training
    net.eval()
    try:
        _, feats = tap.run(net, torch.zeros(1, input_channels(net), size, size, device=device))
    finally:
        net.train(was_training)
    shapes = []
    for name, f in zip(tap.names, feats):
        f = time_mean(f)
        if f.dim() != 4:
            raise ValueError(f'hint layer {name!r} outputs a {f.dim()}-D tensor {tuple(f.shape)}; hints need '
                             f'[B, C, H, W] or [T, B, C, H, W] feature maps')
        shapes.append(tuple(f.shape[1:]))
    return shapes
