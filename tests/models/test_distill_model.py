"""SpikerIRDistillModel on CPU: a tiny NAFNet teacher trained and saved by basicsr's own SRModel, distilled into a
tiny SpikerIR student (hooks, adapters, KD schedule, EMA buffers, tiling, checkpoints, pipeline resume, DDP, errors)."""
import copy
import logging
import os
import re
import sys

import cv2
import numpy as np
import pytest
import skimage.data
import torch
import yaml
from torch import nn

import spikerir_plugin  # noqa: F401  (registers archs, losses, models)
from basicsr.archs import build_network
from basicsr.models import build_model
from spikingjelly.activation_based.neuron import BaseNode
from spikerir_plugin.models.feature_hints import FeatureTap, default_hint_layers
from spikerir_plugin.models.kd_schedule import KDSchedule
from spikerir_plugin.utils.options import student_alone_options
from spikerir_plugin.inference.tiled import tiled_forward

from conftest import LogLines

TINY_STUDENT = {'type': 'SpikerIR', 'preset': 'tiny', 'T': 2, 'reduction_t': 2}
TINY_TEACHER = {'type': 'NAFNet', 'width': 8, 'middle_blk_num': 1, 'enc_blk_nums': [1, 1, 1, 1],
                'dec_blk_nums': [1, 1, 1, 1]}


def noisy_patches(n=4, size=32, sigma=0.1, seed=0):
    """(lq, gt) [n, 3, size, size] crops of skimage photos with Gaussian noise."""
    photos = [skimage.data.astronaut(), np.repeat(skimage.data.camera()[..., None], 3, 2), skimage.data.coffee()]
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(n):
        img = photos[i % len(photos)]
        y, x = rng.integers(0, img.shape[0] - size), rng.integers(0, img.shape[1] - size)
        crops.append(img[y:y + size, x:x + size].astype(np.float32) / 255.)
    gt = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()
    lq = gt + sigma * torch.from_numpy(rng.standard_normal(gt.shape).astype(np.float32))
    return lq, gt


def base_opt(tmp, **extra):
    os.makedirs(tmp, exist_ok=True)
    opt = {'name': 'unit', 'model_type': 'SpikerIRDistillModel', 'num_gpu': 0, 'is_train': True, 'dist': False,
           'rank': 0, 'world_size': 1, 'scale': 1,
           'path': {'models': str(tmp), 'training_states': str(tmp), 'visualization': str(tmp)}}
    opt.update(extra)
    return opt


@pytest.fixture(scope='module')
def teacher_ckpt(tmp_path_factory):
    """A tiny NAFNet trained 6 iterations by basicsr's SRModel and saved by basicsr (net_g_6.pth, `params`)."""
    tmp = tmp_path_factory.mktemp('teacher')
    opt = base_opt(tmp, model_type='SRModel', network_g=TINY_TEACHER,
                   train={'optim_g': {'type': 'Adam', 'lr': 2e-3}, 'pixel_opt': {'type': 'L1Loss'},
                          'scheduler': {'type': 'MultiStepLR', 'milestones': [1000], 'gamma': 0.5}})
    torch.manual_seed(0)
    model = build_model(opt)
    lq, gt = noisy_patches(4, 32)
    for it in range(1, 7):
        model.update_learning_rate(it)
        model.feed_data({'lq': lq, 'gt': gt})
        model.optimize_parameters(it)
    model.save(0, 6)
    return str(tmp / 'net_g_6.pth')


def distill_opt(tmp, teacher_path, **train):
    train_opt = {'optim_g': {'type': 'AdamW', 'lr': 2e-3, 'weight_decay': 0.0},
                 'scheduler': {'type': 'CosineAnnealingLR', 'T_max': 100, 'eta_min': 1e-5},
                 'pixel_opt': {'type': 'L1Loss'}, 'fft_opt': {'type': 'FFTLoss', 'loss_weight': 0.01},
                 'hint_opt': {'type': 'HintLoss', 'criterion': 'mse'}, 'kd_opt': {'type': 'L1Loss'},
                 'kd_schedule': {'type': 'constant', 'start': 0.5}, 'hint_probe_size': 32}
    train_opt.update(train)
    opt = base_opt(tmp, network_g=copy.deepcopy(TINY_STUDENT), network_t=copy.deepcopy(TINY_TEACHER),
                   train=train_opt, val={'tile': None})
    opt['path'].update(pretrain_network_t=teacher_path, param_key_t='params', strict_load_t=True,
                       ignore_resume_networks=['network_t'])
    return opt


_DELETE = object()


def _with(opt, dotted, value):
    opt = copy.deepcopy(opt)
    *parents, leaf = dotted.split('.')
    node = opt
    for p in parents:
        node = node[p]
    if value is _DELETE:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return opt


# ---------------------------------------------------------------------------------------------- teacher and hints
def test_teacher_is_frozen_eval_and_loaded_from_the_basicsr_checkpoint(tmp_path, teacher_ckpt):
    model = build_model(distill_opt(tmp_path, teacher_ckpt))
    saved = torch.load(teacher_ckpt)['params']
    assert not model.net_t.training
    assert all(not p.requires_grad for p in model.net_t.parameters())
    for key, value in model.net_t.state_dict().items():
        assert torch.equal(value, saved[key]), key
    teacher_params = {id(p) for p in model.net_t.parameters()}
    optimised = {id(p) for group in model.optimizer_g.param_groups for p in group['params']}
    assert not teacher_params & optimised
    adapter_params = {id(p) for p in model.net_hint.parameters()}
    assert adapter_params and adapter_params <= optimised  # adapters are trained with the student


@pytest.mark.parametrize('layout, param_key', [('raw', 'params'), ('raw', None), ('state_dict', 'state_dict')])
def test_teacher_from_official_style_files(tmp_path, teacher_ckpt, layout, param_key):
    """Official releases are raw state dicts (ESDNet) or {'state_dict': ...} with DataParallel's `module.` prefix."""
    params = torch.load(teacher_ckpt)['params']
    if layout == 'raw':
        ckpt = params
    else:
        ckpt = {'state_dict': {f'module.{k}': v for k, v in params.items()}, 'epoch': 3}
    path = tmp_path / 'official.pth'
    torch.save(ckpt, path)
    opt = distill_opt(tmp_path, teacher_ckpt)
    opt['path'].update(pretrain_network_t=str(path), param_key_t=param_key)
    model = build_model(opt)
    for key, value in model.net_t.state_dict().items():
        assert torch.equal(value, params[key]), key


def test_non_strict_teacher_loads_what_fits(tmp_path, teacher_ckpt):
    """strict_load_t: false skips a few missing, unexpected or mis-shaped keys and loads every key that fits."""
    saved = torch.load(teacher_ckpt)['params']
    # a mis-shaped entry is skipped (the net keeps its own initialisation there), the rest still loads
    edited = dict(saved, **{'intro.weight': torch.zeros(8, 3, 5, 5), 'extra.weight': torch.zeros(1)})
    torch.save({'params': edited}, tmp_path / 'edited.pth')
    opt = distill_opt(tmp_path, str(tmp_path / 'edited.pth'))
    opt['path']['strict_load_t'] = False
    teacher = build_model(opt).net_t.state_dict()
    assert teacher['intro.weight'].shape == (8, 3, 3, 3) and teacher['intro.weight'].abs().sum() > 0
    assert all(torch.equal(teacher[k], v) for k, v in saved.items() if k != 'intro.weight')


def test_non_strict_teacher_that_would_stay_mostly_random_is_refused(tmp_path, teacher_ckpt):
    """A teacher built with other arguments than its checkpoint: strict_load_t: false would freeze a mostly random
    network, so it is an error that names the argument to fix."""
    saved = torch.load(teacher_ckpt)['params']
    opt = _with(distill_opt(tmp_path, teacher_ckpt), 'network_t.width', 4)
    opt['path']['strict_load_t'] = False
    with pytest.raises(ValueError) as caught:
        build_model(opt)
    text = str(caught.value)
    assert re.search(rf'strict_load_t: false would load only \d+ of the {len(saved)} entries of network_t NAFNet',
                     text), text
    assert 'set network_t.width: 8 (the checkpoint fits it exactly' in text and 'shape mismatches' in text
    opt = _with(distill_opt(tmp_path, teacher_ckpt), 'network_t.middle_blk_num', 4)  # extra blocks stay random
    opt['path']['strict_load_t'] = False
    with pytest.raises(ValueError, match=r'would load only .*set network_t.middle_blk_num: 1 \(the checkpoint'):
        build_model(opt)


def test_teacher_width_mismatch_names_the_argument_not_a_non_strict_load(tmp_path, teacher_ckpt):
    opt = _with(distill_opt(tmp_path, teacher_ckpt), 'network_t.width', 16)
    with pytest.raises(ValueError) as caught:
        build_model(opt)
    text = str(caught.value)
    assert text.startswith(f"The teacher checkpoint '{teacher_ckpt}'")
    assert "set network_t.width: 8 (the checkpoint fits it exactly; it is 16 now)" in text
    assert 'strict_load_t' not in text


def test_default_hint_layers_adapter_shapes_and_resize(tmp_path, teacher_ckpt):
    model = build_model(distill_opt(tmp_path, teacher_ckpt))
    pairs = [p for p, _, _ in model.hint_shapes]
    assert pairs == [('decoder_level3', 'decoders.1'), ('decoder_level2', 'decoders.2'),
                     ('decoder_level1', 'decoders.3')]
    # tiny SpikerIR decoders: 4*dim, 2*dim, 2*dim channels at 1/4, 1/2, 1; NAFNet w8: 32, 16, 8 channels
    assert [s for _, s, _ in model.hint_shapes] == [(32, 8, 8), (16, 16, 16), (16, 32, 32)]
    assert [t for _, _, t in model.hint_shapes] == [(32, 8, 8), (16, 16, 16), (8, 32, 32)]
    assert [(a.in_channels, a.out_channels, a.kernel_size) for a in model.net_hint.adapters] == \
        [(32, 32, (1, 1)), (16, 16, (1, 1)), (16, 8, (1, 1))]
    # a pair with different resolutions: student 1/4 level vs teacher full-resolution level -> resized
    opt = distill_opt(tmp_path, teacher_ckpt, hint_layers=[['decoder_level3', 'decoders.3']])
    model = build_model(opt)
    lq, gt = noisy_patches(2, 32)
    _, t_feats = model.teacher_tap.run(model.net_t, lq)
    out, s_feats = model.student_tap.run(model.net_g, lq)
    hints = model.net_hint(s_feats, [f.shape[-2:] for f in t_feats])
    assert out.shape == lq.shape and hints[0].shape == t_feats[0].shape == (2, 8, 32, 32)


@pytest.mark.parametrize('levels, expected', [
    (4, [['decoder_level3', 'decoders.1'], ['decoder_level2', 'decoders.2'], ['decoder_level1', 'decoders.3']]),
    (3, [['decoder_level3', 'decoders.0'], ['decoder_level2', 'decoders.1'], ['decoder_level1', 'decoders.2']]),
    (2, [['decoder_level2', 'decoders.0'], ['decoder_level1', 'decoders.1']]),
])
def test_default_hints_pair_equal_resolutions_for_any_nafnet_depth(levels, expected):
    """The default pairs follow the teacher's depth: SpikerIR's levels at 1/4, 1/2, 1 meet the NAFNet decoders at
    the same resolution, so no hint needs resizing."""
    student = build_network(TINY_STUDENT)
    teacher = build_network(dict(TINY_TEACHER, enc_blk_nums=[1] * levels, dec_blk_nums=[1] * levels))
    pairs = default_hint_layers(student, teacher)
    assert pairs == expected
    x = torch.rand(1, 3, 32, 32)
    s_feats = FeatureTap(student, [p[0] for p in pairs], 'student').run(student, x)[1]
    t_feats = FeatureTap(teacher, [p[1] for p in pairs], 'teacher').run(teacher, x)[1]
    assert [f.shape[-2:] for f in s_feats] == [f.shape[-2:] for f in t_feats]
    assert default_hint_layers(student, build_network({'type': 'Restormer', 'dim': 8, 'num_blocks': [1] * 4,
                                                       'num_refinement_blocks': 1, 'heads': [1, 1, 2, 2]})) == \
        [[f'decoder_level{i}'] * 2 for i in (3, 2, 1)]


def test_kd_training_decreases_every_loss_term(tmp_path, teacher_ckpt):
    torch.manual_seed(0)
    model = build_model(distill_opt(tmp_path, teacher_ckpt))
    lq, gt = noisy_patches(2, 32, seed=1)
    history = []
    for it in range(1, 31):
        model.update_learning_rate(it)
        model.feed_data({'lq': lq, 'gt': gt})
        model.optimize_parameters(it)
        history.append(model.get_current_log())
    assert set(history[0]) == {'l_pix', 'l_fft', 'l_hint', 'l_kd', 'kd_weight', 'l_total'}
    assert all(h['kd_weight'] == pytest.approx(0.5) for h in history)
    for key in ('l_pix', 'l_fft', 'l_hint', 'l_kd', 'l_total'):
        first = np.mean([h[key] for h in history[:5]])
        last = np.mean([h[key] for h in history[-5:]])
        assert last < first, (key, first, last)
    assert all(np.isfinite(h['l_total']) for h in history)


def test_student_alone_without_teacher_trains_and_logs_pixel_terms(tmp_path):
    opt = base_opt(tmp_path, network_g=copy.deepcopy(TINY_STUDENT),
                   train={'optim_g': {'type': 'SGD', 'lr': 0.05, 'momentum': 0.9},
                          'pixel_opt': {'type': 'PSNRLoss'}, 'fft_opt': {'type': 'FFTLoss', 'loss_weight': 0.01}})
    model = build_model(opt)
    assert model.net_t is None and type(model.net_g).__name__ == 'SpikerIR'
    lq, gt = noisy_patches(2, 32)
    model.feed_data({'lq': lq, 'gt': gt})
    model.optimize_parameters(1)
    assert set(model.get_current_log()) == {'l_pix', 'l_fft', 'l_total'}
    assert isinstance(model.optimizer_g, torch.optim.SGD) and not model.schedulers


def _train_losses(model, iters=2):
    lq, gt = noisy_patches(2, 32, seed=4)
    logs = []
    for it in range(1, iters + 1):
        model.feed_data({'lq': lq, 'gt': gt})
        model.optimize_parameters(it)
        logs.append(model.get_current_log())
    return logs


def test_speed_section_switches_layout_precision_and_compile(tmp_path, teacher_ckpt):
    torch.manual_seed(0)
    reference = _train_losses(build_model(distill_opt(tmp_path, teacher_ckpt)))
    # compile (eager backend: the same kernels) must give the reference losses
    torch.manual_seed(0)
    opt = distill_opt(tmp_path, teacher_ckpt)
    opt['speed'] = {'compile': {'backend': 'eager'}}
    compiled = build_model(opt)
    assert compiled.net_g_forward is not compiled.net_g and compiled._net_t_fwd is not compiled.net_t
    for a, b in zip(_train_losses(compiled), reference):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-7)
    # channels_last + bf16: NHWC conv weights in student, adapters and teacher; fp32 neuron state; fp32 losses
    torch.manual_seed(0)
    opt = distill_opt(tmp_path, teacher_ckpt)
    opt['speed'] = {'channels_last': True, 'bf16': True}
    model = build_model(opt)
    for net in (model.net_g, model.net_hint, model.net_t):
        convs = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.weight.dim() == 4]
        assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    state_dtypes = set()
    for m in model.net_g.modules():
        if isinstance(m, BaseNode):  # a neuron's state takes the dtype of its (pre-hooked) input
            m.register_forward_hook(lambda mod, i, o: state_dtypes.add(i[0].dtype))
    logs = _train_losses(model)
    assert state_dtypes == {torch.float32} and model.output.dtype == torch.float32
    for a, b in zip(logs, reference):
        assert set(a) == set(b) and all(np.isfinite(v) for v in a.values())
        assert a['l_pix'] == pytest.approx(b['l_pix'], rel=0.05)  # bf16 rounding, same training otherwise
    opt['speed'] = {'cuda_graph': True}
    with pytest.raises(ValueError, match='speed.cuda_graph is not supported by the training models'):
        build_model(opt)


# ---------------------------------------------------------------------------------------------- distillation options
def test_a_teacher_does_not_change_the_student_init_or_the_data_stream(tmp_path, teacher_ckpt):
    """Building the teacher and adapters draws from a forked random stream: after construction the global stream
    is where the same run without a teacher leaves it, so both see the same crops, flips and noise."""
    opt = distill_opt(tmp_path, teacher_ckpt, kd_inputs={'type': 'noise', 'sigma': 25}, hint_adapter='mlp')
    states = []
    for options in (opt, student_alone_options(opt)):
        torch.manual_seed(3)
        model = build_model(options)
        states.append((torch.get_rng_state(), model.net_g.state_dict()))
    assert torch.equal(states[0][0], states[1][0])
    assert all(torch.equal(v, states[1][1][k]) for k, v in states[0][1].items())


def test_student_alone_options_drop_every_distillation_key(tmp_path, teacher_ckpt):
    opt = distill_opt(tmp_path, teacher_ckpt, hint_adapter='conv3x3', kd_inputs={'type': 'transform'},
                      hint_schedule={'type': 'constant', 'start': 0.1}, init_from_teacher=False,
                      hint_layers=[['decoder_level1', 'decoders.3']])
    alone = student_alone_options(opt, name='alone')
    assert 'network_t' not in alone and alone['model_type'] == 'SpikingSRModel' and alone['name'] == 'alone'
    assert set(alone['train']) == {'optim_g', 'scheduler', 'pixel_opt', 'fft_opt'}
    assert 'pretrain_network_t' not in alone['path'] and opt['train']['kd_inputs']  # the original is untouched
    model = build_model(alone)
    assert type(model).__name__ == 'SpikingSRModel' and not hasattr(model, 'net_t')


@pytest.mark.parametrize('kind, modules', [('conv1x1', [nn.Conv2d]), ('conv3x3', [nn.Conv2d]),
                                           ('mlp', [nn.Conv2d, nn.ReLU, nn.Conv2d])])
def test_hint_adapter_forms(tmp_path, teacher_ckpt, kind, modules):
    model = build_model(distill_opt(tmp_path, teacher_ckpt, hint_adapter=kind))
    for adapter, (_, s_shape, t_shape) in zip(model.net_hint.adapters, model.hint_shapes):
        parts = list(adapter) if isinstance(adapter, nn.Sequential) else [adapter]
        assert [type(p) for p in parts] == modules
        assert parts[0].in_channels == s_shape[0] and parts[-1].out_channels == t_shape[0]
        assert parts[0].kernel_size == ((3, 3) if kind == 'conv3x3' else (1, 1))
    lq, gt = noisy_patches(2, 32)
    model.feed_data({'lq': lq, 'gt': gt})
    model.optimize_parameters(1)
    assert all(p.grad is not None for p in model.net_hint.parameters())


def test_identity_adapter_hints_a_same_width_teacher_and_init_from_teacher_copies_its_weights(tmp_path):
    """A same-architecture analog twin (neuron: rate) teaches without adapters and initialises the student; only
    entries of another shape (the temporal gates, T=1 vs T=2) keep the student's own initialisation."""
    twin = dict(TINY_STUDENT, T=1, reduction_t=1, neuron='rate')
    opt = base_opt(tmp_path / 'twin', model_type='SRModel', network_g=twin,
                   train={'optim_g': {'type': 'Adam', 'lr': 2e-3}, 'pixel_opt': {'type': 'L1Loss'},
                          'scheduler': {'type': 'MultiStepLR', 'milestones': [1000], 'gamma': 0.5}})
    teacher = build_model(opt)
    lq, gt = noisy_patches(2, 32)
    for it in (1, 2):
        teacher.feed_data({'lq': lq, 'gt': gt})
        teacher.optimize_parameters(it)
    teacher.save(0, 2)
    path = str(tmp_path / 'twin' / 'net_g_2.pth')
    opt = distill_opt(tmp_path, path, hint_adapter='identity', init_from_teacher=True)
    opt['network_t'] = twin
    model = build_model(opt)
    student, taught = model.net_g.state_dict(), model.net_t.state_dict()
    differ = [k for k in taught if taught[k].shape != student[k].shape]
    assert differ and all('attn.ta.' in k for k in differ)
    assert all(torch.equal(student[k], taught[k]) for k in taught if k not in differ)
    assert all(isinstance(a, nn.Identity) for a in model.net_hint.adapters)
    assert not any(isinstance(m, BaseNode) for m in model.net_t.modules())  # the twin has no spiking neuron
    model.feed_data({'lq': lq, 'gt': gt})
    model.optimize_parameters(1)
    log = model.get_current_log()
    assert np.isfinite(log['l_hint']) and log['l_hint'] > 0
    # init_from_teacher leaves a resumed or fine-tuned student alone
    opt['path']['pretrain_network_g'] = teacher_ckpt_like = str(tmp_path / 'student.pth')
    torch.save({'params': build_network(TINY_STUDENT).state_dict()}, teacher_ckpt_like)
    tuned = build_model(opt).net_g.state_dict()
    assert not torch.equal(tuned['patch_embed.proj.weight'], taught['patch_embed.proj.weight'])


def test_membrane_hint_reads_the_neuron_potential_and_trains_through_it():
    student = build_network(TINY_STUDENT)
    neuron = 'decoder_level1.0.residual.0'
    tap = FeatureTap(student, [neuron, neuron + ':membrane'], 'student')
    lq, _ = noisy_patches(2, 32)
    _, (spikes, v) = tap.run(student, lq)
    assert spikes.shape == v.shape and spikes.dim() == 5 and spikes.sum() > 0
    # post-reset potentials: 0 where the neuron fired (hard reset), below the threshold everywhere
    assert torch.all(v[spikes > 0] == 0) and torch.all(v < dict(student.named_modules())[neuron].v_threshold)
    v.square().mean().backward()
    assert student.patch_embed.proj.weight.grad.abs().sum() > 0
    assert dict(student.named_modules())[neuron].v_seq is None  # no graph kept between calls


@pytest.mark.parametrize('kind', ['transform', 'noise'])
def test_kd_inputs_distil_on_batches_the_pixel_loss_never_sees(tmp_path, teacher_ckpt, kind):
    spec = {'type': kind, 'loss_weight': 0.5, **({'sigma': 25} if kind == 'noise' else {})}
    opt = distill_opt(tmp_path, teacher_ckpt, kd_inputs=spec)
    opt['manual_seed'] = 5
    model = build_model(opt)
    lq, gt = noisy_patches(2, 32, sigma=25 / 255)
    model.feed_data({'lq': lq, 'gt': gt})
    seen = []
    hook = model.net_t.register_forward_hook(lambda m, i, o: seen.append(i[0].detach().clone()))
    model.optimize_parameters(1)
    hook.remove()
    assert len(seen) == 2 and torch.equal(seen[0], lq) and not torch.equal(seen[1], lq)
    extra = seen[1]
    if kind == 'noise':  # a fresh draw of the same noise level on the clean crops
        assert (extra - gt).std().item() == pytest.approx(25 / 255, rel=0.1)
        assert not torch.allclose(extra - gt, lq - gt)
    else:  # a flip / rotation / transpose of the input, never the input itself
        variants = [torch.rot90(lq, k, (-2, -1)) for k in range(4)]
        variants += [torch.flip(v, (-1,)) for v in variants]
        assert any(torch.equal(extra, v) for v in variants[1:])
    log = model.get_current_log()
    assert log['l_kd_inputs'] > 0
    # the generator is part of the training state: a resumed run draws the same next batch
    state = model.extra_training_state()['kd_inputs_rng']
    again = build_model(opt)
    again.load_extra_training_state({'kd_schedule': model.kd_schedule.state_dict(), 'kd_inputs_rng': state})
    assert torch.equal(again.kd_generator.get_state(), model.kd_generator.get_state())


def test_hint_schedule_weights_the_hints_apart_from_output_kd(tmp_path, teacher_ckpt):
    opt = distill_opt(tmp_path, teacher_ckpt, hint_schedule={'type': 'linear', 'start': 1.0, 'end': 0.0,
                                                             'end_iter': 4},
                      kd_schedule={'type': 'constant', 'start': 0.5})
    model = build_model(opt)
    lq, gt = noisy_patches(2, 32)
    logs = []
    for it in (2, 4):
        model.feed_data({'lq': lq, 'gt': gt})
        model.optimize_parameters(it)
        logs.append(model.get_current_log())
    assert [lg['hint_weight'] for lg in logs] == [pytest.approx(0.5), pytest.approx(0.0)]
    assert all(lg['kd_weight'] == pytest.approx(0.5) for lg in logs)
    last = logs[-1]  # the hints no longer count; output KD still does
    assert last['l_total'] == pytest.approx(last['l_pix'] + last['l_fft'] + 0.5 * last['l_kd'], rel=1e-5)
    assert 'hint_schedule' in model.extra_training_state()


# ---------------------------------------------------------------------------------------------- schedule
@pytest.mark.parametrize('spec, expected', [
    ({'type': 'constant', 'start': 0.12}, {0: 0.12, 50: 0.12, 10 ** 6: 0.12}),
    ({'type': 'linear', 'start': 1.0, 'end': 0.0, 'start_iter': 100, 'end_iter': 300},
     {0: 1.0, 100: 1.0, 150: 0.75, 200: 0.5, 300: 0.0, 400: 0.0}),
    ({'type': 'cosine', 'start': 0.2, 'end': 0.0, 'end_iter': 100},
     {0: 0.2, 50: 0.1, 100: 0.0, 25: 0.1 * (1 + np.cos(np.pi / 4)), 200: 0.0}),
    ({'type': 'step', 'start': 0.8, 'steps': [10, 20], 'gamma': 0.5}, {9: 0.8, 10: 0.4, 19: 0.4, 20: 0.2, 99: 0.2}),
])
def test_kd_schedule_values(spec, expected):
    schedule = KDSchedule.from_opt(spec)
    for it, w in expected.items():
        assert schedule(it) == pytest.approx(w, abs=1e-12), (spec['type'], it)
    assert KDSchedule.from_opt(None)(123) == 1.0


def test_kd_schedule_state_roundtrip_restores_the_saved_schedule():
    saved = KDSchedule.from_opt({'type': 'linear', 'start': 1.0, 'end': 0.0, 'end_iter': 10})
    saved(5)
    other = KDSchedule.from_opt({'type': 'constant', 'start': 3.0})
    assert other.load_state_dict(saved.state_dict()) is True
    assert other.config() == saved.config() and other.last_weight == pytest.approx(0.5)
    assert other(7) == pytest.approx(0.3)


# ---------------------------------------------------------------------------------------------- EMA, checkpoints
def test_ema_averages_parameters_and_batchnorm_buffers(tmp_path, teacher_ckpt):
    opt = distill_opt(tmp_path, teacher_ckpt, ema_decay=0.5)
    opt['train']['ema_warmup'] = False  # basicsr's fixed decay from the first update
    model = build_model(opt)
    lq, gt = noisy_patches(2, 32)
    model.feed_data({'lq': lq, 'gt': gt})
    model.optimize_parameters(1)
    ema_before = {k: v.clone() for k, v in model.net_g_ema.state_dict().items()}
    model.optimize_parameters(2)
    student = model.net_g.state_dict()
    bn_keys = [k for k in student if k.endswith('running_mean')]
    assert bn_keys, 'the tiny student should hold tdBN running statistics'
    for key, value in model.net_g_ema.state_dict().items():
        if value.dtype.is_floating_point:
            torch.testing.assert_close(value, 0.5 * ema_before[key] + 0.5 * student[key])
        else:
            assert torch.equal(value, student[key])
    assert any(not torch.equal(model.net_g_ema.state_dict()[k], torch.zeros_like(student[k])) for k in bn_keys)


def test_ema_warmup_copies_the_weights_first_and_reaches_the_fixed_decay(tmp_path, teacher_ckpt):
    model = build_model(distill_opt(tmp_path, teacher_ckpt, ema_decay=0.999))
    lq, gt = noisy_patches(2, 32)
    model.feed_data({'lq': lq, 'gt': gt})
    model.optimize_parameters(1)
    for key, value in model.net_g.state_dict().items():  # a short run's EMA starts at its weights, not its init
        assert torch.equal(model.net_g_ema.state_dict()[key], value), key
    ema_before = {k: v.clone() for k, v in model.net_g_ema.state_dict().items()}
    model.optimize_parameters(2)
    student = model.net_g.state_dict()
    key = next(k for k, v in student.items() if v.dtype.is_floating_point and not torch.equal(v, ema_before[k]))
    torch.testing.assert_close(model.net_g_ema.state_dict()[key], 0.1 * ema_before[key] + 0.9 * student[key])
    assert model.ema_decay_at(601) == pytest.approx(600 / 609)  # 600 iterations: an average over the last ~60
    assert model.ema_decay_at(10 ** 6) == 0.999  # long runs: the configured decay


def test_checkpoint_keeps_student_keys_clean_and_loads_strictly(tmp_path, teacher_ckpt):
    model = build_model(distill_opt(tmp_path, teacher_ckpt, ema_decay=0.9))
    lq, gt = noisy_patches(2, 32)
    model.feed_data({'lq': lq, 'gt': gt})
    model.optimize_parameters(1)
    model.save(0, 1)
    ckpt = torch.load(tmp_path / 'net_g_1.pth')
    assert set(ckpt) == {'params', 'params_ema', 'adapters'}
    bare = build_network(TINY_STUDENT)
    bare.load_state_dict(ckpt['params'], strict=True)  # no `student.` / `adapters.` prefixes
    state = torch.load(tmp_path / '1.state')
    assert state['kd_schedule']['config']['type'] == 'constant'
    # test-time model: bare student, no teacher, loaded from params_ema
    test_opt = base_opt(tmp_path, is_train=False, network_g=copy.deepcopy(TINY_STUDENT),
                        network_t=copy.deepcopy(TINY_TEACHER),
                        val={'tile': {'size': 16, 'overlap': 4}})
    test_opt['path'].update(pretrain_network_g=str(tmp_path / 'net_g_1.pth'), param_key_g='params_ema')
    tester = build_model(test_opt)
    assert tester.net_t is None
    for key, value in tester.net_g.state_dict().items():
        torch.testing.assert_close(value, ckpt['params_ema'][key])
    tester.feed_data({'lq': torch.rand(1, 3, 40, 24)})
    tester.test()
    assert tester.output.shape == (1, 3, 40, 24) and torch.isfinite(tester.output).all()


def test_fine_tuning_from_a_raw_state_dict_initialises_the_ema_from_it(tmp_path, teacher_ckpt):
    """Official releases (e.g. ESDNet's) are raw state dicts: param_key_g ~ for the student, and the EMA copy must
    start from the same weights (basicsr's load_network would look for params_ema/params and fail)."""
    torch.manual_seed(5)
    raw = build_network(TINY_STUDENT).state_dict()
    torch.save(raw, tmp_path / 'official_student.pth')
    opt = distill_opt(tmp_path, teacher_ckpt, ema_decay=0.9)
    opt['path'].update(pretrain_network_g=str(tmp_path / 'official_student.pth'), param_key_g=None)
    model = build_model(opt)
    for key, value in raw.items():
        assert torch.equal(model.net_g.state_dict()[key], value), key
        assert torch.equal(model.net_g_ema.state_dict()[key], value), key


# ---------------------------------------------------------------------------------------------- tiling
def test_tiled_inference_equals_whole_image_inference():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 37, 45)
    pointwise = nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        torch.testing.assert_close(tiled_forward(pointwise, x, 8, 0), pointwise(x), atol=1e-6, rtol=0)
    # receptive-field radius 2 (two 3x3 convs): exact when overlap // 2 >= 2, not when the margin is too small
    rf2 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
    with torch.no_grad():
        whole = rf2(x)
        torch.testing.assert_close(tiled_forward(rf2, x, 16, 4), whole, atol=1e-5, rtol=0)
        torch.testing.assert_close(tiled_forward(rf2, x, 64, 8), whole, atol=1e-5, rtol=0)  # one tile
        assert (tiled_forward(rf2, x, 16, 2) - whole).abs().max() > 1e-4
    # integer upscaling networks: the output grid is scaled with the tiles
    up = nn.Sequential(nn.Conv2d(3, 12, 1), nn.PixelShuffle(2))
    with torch.no_grad():
        torch.testing.assert_close(tiled_forward(up, x, 10, 2), up(x), atol=1e-6, rtol=0)


def test_spiking_tiles_are_independent_forwards():
    torch.manual_seed(1)
    net = build_network(TINY_STUDENT).train()  # batch statistics: activations at firing scale
    patch = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        first = net(patch)
        out = tiled_forward(net, torch.cat([patch, patch], dim=-1), 16, 0)
    assert out.shape == (1, 3, 16, 32) and torch.isfinite(out).all()
    torch.testing.assert_close(out[..., :16], out[..., 16:], atol=0, rtol=0)
    torch.testing.assert_close(out[..., :16], first, atol=1e-6, rtol=0)


def test_model_validation_with_tiles_uses_bare_net_and_repeats(tmp_path, teacher_ckpt):
    opt = distill_opt(tmp_path, teacher_ckpt)
    opt['val'] = {'tile': {'size': 16, 'overlap': 4}, 'metrics': {'psnr': {'type': 'calculate_psnr',
                                                                          'crop_border': 0}}}
    model = build_model(opt)
    lq, gt = noisy_patches(1, 32)

    class Pairs(torch.utils.data.Dataset):
        opt = {'name': 'tiny-val'}

        def __len__(self):
            return 2

        def __getitem__(self, i):
            return {'lq': lq[0], 'gt': gt[0], 'lq_path': f'img{i}.png'}

    loader = torch.utils.data.DataLoader(Pairs(), batch_size=1)
    model.validation(loader, 1, None, save_img=False)
    psnr_first = model.metric_results['psnr']
    model.validation(loader, 2, None, save_img=False)
    assert np.isfinite(psnr_first) and model.metric_results['psnr'] == pytest.approx(psnr_first, abs=1e-9)
    assert model.net_g.training and not model.net_t.training


# ---------------------------------------------------------------------------------------------- pipeline resume
def _write_pair_folders(root, size=32):
    lq, gt = noisy_patches(1, size, seed=3)
    for name, imgs in (('lq', lq), ('gt', gt)):
        os.makedirs(root / name, exist_ok=True)
        img = (imgs[0].clamp(0, 1).permute(1, 2, 0).numpy()[..., ::-1] * 255).round().astype(np.uint8)
        cv2.imwrite(str(root / name / '0001.png'), img)


def _pipeline_yaml(root, name, total_iter, save_freq, teacher_path):
    data = {'type': 'PairedImageDataset', 'dataroot_gt': str(root / 'data' / 'gt'),
            'dataroot_lq': str(root / 'data' / 'lq'), 'io_backend': {'type': 'disk'}}
    opt = {'name': name, 'model_type': 'SpikerIRDistillModel', 'scale': 1, 'num_gpu': 0, 'manual_seed': 7,
           'datasets': {'train': dict(data, name='train', gt_size=32, use_hflip=False, use_rot=False,
                                      use_shuffle=False, num_worker_per_gpu=0, batch_size_per_gpu=1,
                                      dataset_enlarge_ratio=1, prefetch_mode=None),
                        'val': dict(data, name='val')},
           'network_g': TINY_STUDENT, 'network_t': TINY_TEACHER,
           # no ignore_resume_networks: the plugin's resume adds network_t itself
           'path': {'pretrain_network_t': teacher_path, 'param_key_t': 'params', 'strict_load_t': True,
                    'resume_state': None},
           'train': dict(distill_opt(root, teacher_path)['train'], ema_decay=0.5, total_iter=total_iter,
                         warmup_iter=-1, kd_schedule={'type': 'linear', 'start': 1.0, 'end': 0.1, 'end_iter': 6}),
           'val': {'val_freq': 1000, 'save_img': False, 'tile': {'size': 16, 'overlap': 4},
                   'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0}}},
           'logger': {'print_freq': 1, 'save_checkpoint_freq': save_freq, 'use_tb_logger': False}}
    path = root / f'{name}_{total_iter}.yml'
    path.write_text(yaml.safe_dump(opt))
    return str(path)


def _run_pipeline(monkeypatch, root, yml, *flags):
    from basicsr.train import train_pipeline
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', yml, *flags])
    handler = LogLines()
    logger = logging.getLogger('basicsr')
    level = logger.level
    # basicsr sets the INFO level only when its logger is first created with a log file (earlier tests created it)
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        train_pipeline(str(root))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return [line for line in handler.lines if 'iter:' in line and 'l_total' in line]


def _losses(line):
    return line[line.index('l_pix'):]


def test_pipeline_resume_continues_exactly(tmp_path, monkeypatch, teacher_ckpt):
    """4 iterations in one train_pipeline run == 2 iterations + --auto_resume for 2 more (same seed)."""
    _write_pair_folders(tmp_path / 'data')
    straight = _run_pipeline(monkeypatch, tmp_path, _pipeline_yaml(tmp_path, 'straight', 4, 4, teacher_ckpt))
    first = _run_pipeline(monkeypatch, tmp_path, _pipeline_yaml(tmp_path, 'resumed', 2, 2, teacher_ckpt))
    second = _run_pipeline(monkeypatch, tmp_path, _pipeline_yaml(tmp_path, 'resumed', 4, 2, teacher_ckpt),
                           '--auto_resume')
    assert len(straight) == 4 and len(first) == 2 and len(second) == 2
    assert [int(re.search(r'iter:\s*([\d,]+)', line).group(1).replace(',', '')) for line in second] == [3, 4]
    assert [_losses(line) for line in straight] == [_losses(line) for line in first + second]
    models = tmp_path / 'experiments'
    a = torch.load(models / 'straight' / 'models' / 'net_g_latest.pth')
    b = torch.load(models / 'resumed' / 'models' / 'net_g_latest.pth')
    assert set(a) == set(b) == {'params', 'params_ema', 'adapters'}
    for key in a:
        for name in a[key]:
            torch.testing.assert_close(a[key][name], b[key][name], atol=1e-6, rtol=1e-5, msg=f'{key}.{name}')
    state = torch.load(models / 'resumed' / 'training_states' / '4.state')
    assert state['kd_schedule']['last_iter'] == 4 and 'rng' in state  # model hook + compat's training state


# ---------------------------------------------------------------------------------------------- DDP (gloo, 2 ranks)
def _ddp_worker(rank, world_size, init_file, teacher_path, out_dir):
    import torch.distributed as dist
    import spikerir_plugin  # noqa: F401
    from basicsr.models import build_model as build
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=world_size)
    torch.manual_seed(0)  # same init on both ranks (DDP also broadcasts rank 0's weights)
    opt = distill_opt(out_dir, teacher_path)
    opt.update(dist=True, rank=rank, world_size=world_size)
    opt['val'] = {'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0}}}
    model = build(opt)
    init_adapters = [p.detach().clone() for p in model.get_bare_model(model.net_hint).parameters()]
    lq, gt = noisy_patches(2, 32, seed=10 + rank)  # different data per rank
    for it in (1, 2):
        model.feed_data({'lq': lq, 'gt': gt})
        model.optimize_parameters(it)
        if rank == 0:  # rank-0-only inference, as dist_validation does; must not enter DDP collectives
            model.feed_data({'lq': lq[:1]})
            model.test()
    adapters = model.get_bare_model(model.net_hint)
    changed = any(not torch.equal(a, b) for a, b in zip(init_adapters, adapters.parameters()))
    params = {k: v.detach() for k, v in model.get_bare_model(model.net_g).named_parameters()}  # not BN stats
    params.update({f'hint.{k}': v.detach() for k, v in adapters.named_parameters()})
    torch.save({'state': params, 'adapters_changed': changed}, os.path.join(out_dir, f'rank{rank}.pth'))
    dist.barrier()
    dist.destroy_process_group()


def test_ddp_all_reduces_student_and_adapter_gradients(tmp_path, teacher_ckpt):
    import torch.multiprocessing as mp
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / 'init'), teacher_ckpt, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = torch.load(tmp_path / 'rank0.pth'), torch.load(tmp_path / 'rank1.pth')
    assert r0['adapters_changed'] and r1['adapters_changed']
    assert any(k.startswith('hint.adapters.') for k in r0['state'])
    for key in r0['state']:
        torch.testing.assert_close(r0['state'][key], r1['state'][key], atol=1e-6, rtol=1e-5, msg=key)


# ---------------------------------------------------------------------------------------------- bad input
BAD_INPUTS = [
    ('network_t.type', 'NoSuchNet', KeyError, r"network_t.type: unknown arch 'NoSuchNet'.*NAFNet.*Restormer"),
    ('path.pretrain_network_t', '/nonexistent/teacher.pth', FileNotFoundError,
     r"path.pretrain_network_t: teacher checkpoint '/nonexistent/teacher.pth' does not exist"),
    ('path.pretrain_network_t', _DELETE, ValueError, 'path.pretrain_network_t is required'),
    ('network_t.width', 16, ValueError,
     r'match network_t NAFNet.*mismatches: \[decoders.0.0.beta: checkpoint \(1, 64, 1, 1\) vs net \(1, 128'),
    ('network_t.middle_blk_num', 2, ValueError, r'Missing keys: \[middle_blks.1'),
    ('path.param_key_t', 'weights', KeyError, r"param_key_t: key 'weights' not in .*available keys: params"),
    ('train.hint_layers', [['decoder_level9', 'decoders.1']], KeyError,
     r"student network SpikerIR has no module 'decoder_level9'. Did you mean: decoder_level\d"),
    ('train.hint_layers', [['decoder_level1', 'decoder.3']], KeyError,
     r"teacher network NAFNet has no module 'decoder.3'.*Valid names include: intro, ending, encoders"),
    ('train.hint_layers', [['decoder_level1']], ValueError, r'each entry must be \[student_module_name'),
    ('train.optim_g.type', 'Lion', ValueError, r"unknown optimizer 'Lion'; valid: Adam, AdamW, SGD"),
    ('train.scheduler.type', 'OneCycleLR', ValueError, r"unknown scheduler 'OneCycleLR'.*CosineAnnealingLR"),
    ('train.kd_schedule', {'type': 'exponential'}, ValueError,
     r"unknown schedule 'exponential'; valid: constant, linear, cosine, step"),
    ('train.kd_schedule', {'type': 'linear', 'start': 1, 'end': 0}, ValueError, 'needs both `end` and `end_iter`'),
    ('train.kd_schedule', {'type': 'constant', 'start': 1, 'end_iter': 5}, ValueError,
     r"keys \['end_iter'\] are not used by type 'constant'"),
    ('val.tile', {'size': 16, 'overlap': 16}, ValueError, r'val.tile: overlap \(16\) must be smaller than size'),
    ('val.tile', 256, ValueError, r'val.tile must be \{size: S, overlap: O\} \(or ~ for whole images\), got 256'),
    ('train.kd_schedule', {'type': 'exp', 'rate': 2}, ValueError,
     r"kd_schedule.type: unknown schedule 'exp'; valid: constant, linear, cosine, step"),
    ('train.kd_schedule', {'type': 'step', 'start': 1, 'steps': 100}, ValueError, r'needs `steps`, a non-empty'),
    ('train.kd_schedule', {'type': 'step', 'start': 1, 'steps': [5], 'start_iter': 3}, ValueError,
     r"keys \['start_iter'\] are not used by type 'step'"),
    ('network_t', _DELETE, ValueError, 'need a teacher: add network_t'),
    ('network_g', {'type': 'SPIDEN', 'width': 8, 'depth': 3, 'T': 2}, ValueError,
     r"train.hint_layers is required: SPIDEN declares no hint layers"),
    ('train', {'optim_g': {'type': 'Adam', 'lr': 1e-3}}, ValueError, 'no loss configured'),
    ('num_gpu', 2, ValueError, r'num_gpu: 2 without a launcher means DataParallel.*torchrun.*--launcher pytorch'),
    ('train.hint_adapter', 'conv5x5', ValueError, r"hint_adapter: unknown adapter 'conv5x5'; valid: conv1x1, conv3x3"),
    ('train.hint_adapter', 'identity', ValueError, r'identity needs equal channels.*16 and its teacher hint 8'),
    ('train.hint_layers', [['decoder_level1:membrane', 'decoders.3']], ValueError,
     r"'decoder_level1:membrane': Sequential is not a spiking neuron"),
    ('train.kd_inputs', {'type': 'mixup'}, ValueError, r'kd_inputs must be a mapping with type one of transform, noise'),
    ('train.kd_inputs', {'type': 'noise'}, ValueError, r'type noise needs sigma > 0'),
    ('train.kd_inputs', {'type': 'transform', 'sigma': 25}, ValueError, r"keys \['sigma'\] are not used by type"),
    ('train.kd_opt', _DELETE, ValueError, r'train.kd_inputs needs train.kd_opt'),
    ('train.init_from_teacher', True, ValueError, r'init_from_teacher: the teacher NAFNet shares no parameter'),
    ('train.hint_schedule', {'type': 'cosine', 'start': 1}, ValueError, r'train.hint_schedule: type .cosine. needs both'),
]


@pytest.mark.parametrize('key, value, error, message', BAD_INPUTS, ids=[f'{b[0]}={b[1]!r}'[:60] for b in BAD_INPUTS])
def test_bad_input_gives_a_clear_error(tmp_path, teacher_ckpt, key, value, error, message):
    opt = distill_opt(tmp_path, teacher_ckpt)
    if key == 'train.kd_opt':  # extra KD inputs without the loss that distils them
        opt['train']['kd_inputs'] = {'type': 'transform'}
    opt = _with(opt, key, value)
    with pytest.raises(error, match=message):
        build_model(opt)
