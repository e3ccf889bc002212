"""Feature hints for ANN->SNN distillation: forward hooks, 1x1 adapters and the trainable student wrapper.

The adapters are trained with the student, so they must sit inside the module that DDP wraps (their gradients are
all-reduced with the student's). ``StudentWithAdapters`` is that module: ``forward(x)`` is the plain student and
``forward(x, hint_sizes)`` also returns the adapted hint features, computed inside the (DDP) forward.
"""
import difflib

import torch
from torch import nn
from torch.nn import functional as F

from spikerir_plugin.utils.snn import reset_states, time_mean

_MAX_LISTED = 30
_ARCHS_WITH_DECODER_LEVELS = ('SpikerIR', 'ESDNet', 'NAFNet', 'Restormer')


def decoder_levels(net):
    """Decoder-level module names of a known arch, coarse to fine (None for other archs).

    NAFNet's depth is a constructor argument, so its levels are read off the built network."""
    name = type(net).__name__
    if name in ('SpikerIR', 'ESDNet', 'Restormer'):
        return ['decoder_level3', 'decoder_level2', 'decoder_level1']
    if name == 'NAFNet':
        return [f'decoders.{i}' for i in range(len(net.decoders))]
    return None


def default_hint_layers(student, teacher):
    """[[student, teacher], ...]: the finest decoder levels of both networks, paired from full resolution upwards
    (SpikerIR's decoder_level1/2/3 sit at 1, 1/2, 1/4 of the input, as do a NAFNet's last three decoders).
    A ValueError asks for train.hint_layers when either arch has no known decoder levels."""
    s, t = decoder_levels(student), decoder_levels(teacher)
    if not s or not t:
        raise ValueError(
            f'train.hint_layers is required: no default hint layers for student {type(student).__name__!r} with '
            f'teacher {type(teacher).__name__!r} (defaults exist between {list(_ARCHS_WITH_DECODER_LEVELS)} with '
            'at least one decoder level). Give a list of [student_module, teacher_module] pairs.')
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


class FeatureTap:
    """Forward hooks that record the outputs of named submodules while ``recording`` is True."""

    def __init__(self, net, names, role):
        self.names = list(names)
        self.recording = False
        self.features = {}
        self.handles = [get_submodule(net, n, role).register_forward_hook(self._hook(n)) for n in self.names]

    def _hook(self, name):
        def hook(module, inputs, output):
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


class StudentWithAdapters(nn.Module):
    """The trained module: the student plus one 1x1 conv adapter per hint layer (student C -> teacher C).

    ``state_dict`` keys are ``student.*`` and ``adapters.*``; the model saves them separately so that checkpoints
    hold the bare student's keys."""

    def __init__(self, student, student_layers, in_channels, out_channels):
        super().__init__()
        self.student = student
        self.adapters = nn.ModuleList(nn.Conv2d(ci, co, 1) for ci, co in zip(in_channels, out_channels))
        self.tap = FeatureTap(student, student_layers, 'student')

    def forward(self, x, hint_sizes=None):
        if hint_sizes is None:
            return self.student(x)
        out, feats = self.tap.run(self.student, x)
        hints = []
        for adapter, feat, size in zip(self.adapters, feats, hint_sizes):
            h = adapter(time_mean(feat))  # spike/membrane features averaged over T, as the readout does
            if tuple(h.shape[-2:]) != tuple(size):
                h = F.interpolate(h, size=tuple(size), mode='bilinear', align_corners=False)
            hints.append(h)
        return out, hints


@torch.no_grad()
def probe_channels(net, tap, in_channels, size, device):
    """Run net once (eval mode, dummy input) and return [(C, H, W)] of the tapped features (T averaged)."""
    was_training = net.training
    net.eval()
    try:
        _, feats = tap.run(net, torch.zeros(1, in_channels, size, size, device=device))
    finally:
        reset_states(net)
        net.train(was_training)
    shapes = []
    for name, f in zip(tap.names, feats):
        f = time_mean(f)
        if f.dim() != 4:
            raise ValueError(f'hint layer {name!r} outputs a {f.dim()}-D tensor {tuple(f.shape)}; hints need '
                             f'[B, C, H, W] or [T, B, C, H, W] feature maps')
        shapes.append(tuple(f.shape[1:]))
    return shapes
