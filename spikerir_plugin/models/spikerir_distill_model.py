"""ANN->SNN distillation (H-KD, arXiv 2504.01755) for spiking restoration networks: SpikingSRModel plus a frozen
teacher, feature hints and output distillation.

Loss (per iteration ``it``):
    pixel_opt(out, gt) [+ perceptual_opt] + fft_opt(out, gt)
    + hint_schedule(it) * sum_l hint_opt(A_l(S_l), T_l)
    + kd_schedule(it) * (kd_opt(out, teacher_out) + kd_inputs.loss_weight * kd_opt(student(x'), teacher(x')))
with S_l the student features at ``train.hint_layers`` (time-averaged), A_l adapters (1x1 convs by default), T_l
the frozen teacher's features, and x' extra inputs that only the distillation sees (``train.kd_inputs``). Without
``network_t`` it is exactly SpikingSRModel (so older options that name this model for a student trained alone keep
working).

Plugin keys (everything else is SpikingSRModel's / SRModel's):
    network_t                  teacher arch spec (any registered arch)
    path.pretrain_network_t    teacher checkpoint (required with network_t); path.param_key_t (default params;
                               ~ for a raw state dict); path.strict_load_t (default true)
    train.kd_opt, train.hint_opt   loss specs (any loss, HintLoss)
    train.hint_layers          [[student_module, teacher_module], ...]; default: the levels both archs declare
                               (feature_hints.py)
    train.hint_probe_size      side of the dummy input used once to learn hint channels/sizes (default 64)
    train.hint_adapter         conv1x1 (default) | conv3x3 | mlp | identity (feature_hints.make_adapter)
    train.kd_schedule          weight of output KD (and of the hints, unless hint_schedule is set) over
                               iterations (kd_schedule.py)
    train.hint_schedule        weight of the hints over iterations (same form; default: kd_schedule)
    train.init_from_teacher    true: a fresh run starts the student from the teacher's weights wherever a
                               parameter or buffer has the same name and shape (a same-architecture teacher, e.g.
                               SpikerIR with neuron: rate); the rest keeps its initialisation. Default false
    train.kd_inputs            extra inputs labelled by the teacher alone, one batch per iteration (needs kd_opt):
                               {type: transform}: a random flip/rotation/transpose of the batch's input;
                               {type: noise, sigma: 25}: a fresh Gaussian noise draw (0-255 units) on the clean
                               crops, for synthetic-noise tasks; optional loss_weight (default 1.0)

Training samples without ground truth (datasets.train of type UnlabelledImageDataset: a batch without ``gt``, or
with ``has_gt`` false for some samples) take the teacher's output as their target in pixel_opt, perceptual_opt,
fft_opt and kd_inputs' noise; hints and output KD apply to every sample as usual. Without network_t such batches are
refused.

The teacher and the adapters are built from a forked random stream, and kd_inputs draws from its own generator, so
a run with a teacher sees exactly the batches (crops, flips, noise) of the same run without one
(``utils.options.student_alone_options``): the two differ only by the distillation.

Checkpoints: net_g_<iter>.pth holds the bare student under ``params`` (and ``params_ema``), so it loads strictly
into the student arch; the hint adapters go under ``adapters`` in the same file, the KD schedule into the training
state. The teacher is never saved: resume keeps loading it from its own checkpoint.
"""
import random

import torch
from basicsr.archs import build_network
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from spikerir_plugin.models import speed as train_speed
from spikerir_plugin.utils.checkpoint import load_weights, read_checkpoint
from spikerir_plugin.utils.options import check_network_opt, network_checkpoint
from spikerir_plugin.utils.snn import time_mean
from .feature_hints import FeatureTap, HintAdapters, default_hint_layers, parse_hint_layers, probe_shapes
from . import run_checks
from .kd_schedule import KDSchedule
from .spiking_sr_model import SpikingSRModel

# Option keys that exist only for distillation (utils/options.py): removing them (and network_t) gives the same run
# without a teacher.
KD_INPUT_TYPES = {'transform': {'type', 'loss_weight'}, 'noise': {'type', 'sigma', 'loss_weight'}}


@MODEL_REGISTRY.register()
class SpikerIRDistillModel(SpikingSRModel):
    """SNN student (network_g) distilled from a frozen teacher (network_t); see the module docstring."""

    labels_missing_gt = True  # the launch checks accept a training set without ground truth when network_t is set
    has_gt = None  # [B] bool of the last batch fed (None: every sample has its gt)

    def __init__(self, opt):
        self.net_t = self.net_hint = self.teacher_tap = self.student_tap = None
        self._kd_weight = self._hint_weight = None
        self.kd_inputs = check_kd_inputs((opt.get('train') or {}).get('kd_inputs'))
        self.kd_generator = None
        super().__init__(opt)

    # ------------------------------------------------------------------ teacher and hints
    def init_training_settings(self):
        train_opt = self.opt['train']
        # a forked stream: building the teacher and adapters must not shift the data stream (see the docstring)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == 'cuda' else []):
            if self.opt.get('network_t'):
                self.net_t = self.build_teacher()
            if train_opt.get('hint_opt') or train_opt.get('hint_layers'):
                self.net_hint = self.build_hint_adapters()
        if train_opt.get('init_from_teacher'):
            self.init_student_from_teacher()
        self.kd_schedule = KDSchedule.from_opt(train_opt.get('kd_schedule'))
        hint_schedule = train_opt.get('hint_schedule')
        self.hint_schedule = self.kd_schedule if hint_schedule is None else KDSchedule.from_opt(hint_schedule,
                                                                                                'hint_schedule')
        if self.kd_inputs is not None:
            seed = self.opt.get('manual_seed')
            self.kd_generator = torch.Generator().manual_seed(
                (random.randrange(2 ** 31) if seed is None else int(seed)) + 7919 * (self.opt.get('rank', 0) + 1))
        super().init_training_settings()

    def build_teacher(self):
        teacher = build_network(dict(self.opt['network_t']))
        load_weights(teacher, *network_checkpoint(self.opt, 't'), net_opt=self.opt['network_t'])
        teacher = teacher.to(self.device).eval()  # never DDP-wrapped: it is frozen and identical on every rank
        teacher.requires_grad_(False)
        train_speed.prepare_model(teacher, self.speed)
        if self.speed.teacher_bf16:
            train_speed.keep_neuron_state_fp32(teacher)  # a spiking teacher keeps fp32 neuron state, as the student does
        self._net_t_fwd = train_speed.maybe_compile(teacher, self.speed)
        self._teacher_forward = self.teacher_outputs
        if self.speed.teacher_cuda_graph:
            self.speed.check_device(self.device)
            self._teacher_forward = train_speed.GraphedForward(self.teacher_outputs)
        return teacher

    def teacher_outputs(self, lq):
        """The frozen teacher on a prepared batch: (output, [hint features averaged over T]), fp32."""
        with torch.no_grad(), train_speed.teacher_autocast_context(self.device, self.speed):
            if self.teacher_tap is not None:
                t_out, t_feats = self.teacher_tap.run(self._net_t_fwd, lq)
            else:
                t_out, t_feats = self._net_t_fwd(lq), []
        return t_out.float(), [time_mean(f).float() for f in t_feats]

    def build_hint_adapters(self):
        train_opt = self.opt['train']
        if self.net_t is None:
            raise ValueError('train.hint_opt / train.hint_layers need a teacher: add network_t and '
                             'path.pretrain_network_t, or remove the hint keys')
        if not train_opt.get('hint_opt'):
            raise ValueError('train.hint_layers is set but train.hint_opt is not (e.g. {type: HintLoss, '
                             'criterion: mse, loss_weight: 1.0})')
        student = self.bare_net_g()
        pairs = parse_hint_layers(train_opt.get('hint_layers') or default_hint_layers(student, self.net_t))
        self.student_tap = FeatureTap(student, [p[0] for p in pairs], 'student')
        self.teacher_tap = FeatureTap(self.net_t, [p[1] for p in pairs], 'teacher')
        size = int(train_opt.get('hint_probe_size', 64))
        s_shapes = probe_shapes(student, self.student_tap, size, self.device)
        t_shapes = probe_shapes(self.net_t, self.teacher_tap, size, self.device)
        adapters = HintAdapters([s[0] for s in s_shapes], [t[0] for t in t_shapes],
                                train_opt.get('hint_adapter', 'conv1x1'))
        self.hint_shapes = list(zip(pairs, s_shapes, t_shapes))
        logger = get_root_logger()
        for (s_name, t_name), s_shape, t_shape in self.hint_shapes:
            resize = ' (resized)' if s_shape[1:] != t_shape[1:] else ''
            logger.info(f'Hint {s_name} {s_shape} -> {train_opt.get("hint_adapter", "conv1x1")} adapter -> {t_name} '
                        f'{t_shape}{resize} at probe size {size}')
        self.load_adapters_on_resume(adapters)
        if not any(p.requires_grad for p in adapters.parameters()):  # identity adapters: nothing to train, and
            return adapters.to(self.device)                          # DDP refuses a module without parameters
        return self.model_to_device(adapters)

    def init_student_from_teacher(self):
        """Copy the teacher's entries into the student where name and shape agree (fresh runs only)."""
        if self.net_t is None:
            raise ValueError('train.init_from_teacher needs a teacher: add network_t and path.pretrain_network_t')
        if self.opt['path'].get('resume_state') or self.opt['path'].get('pretrain_network_g'):
            return  # resumed or fine-tuned: the student's own weights win
        student = self.bare_net_g()
        own, taught = student.state_dict(), self.net_t.state_dict()
        shared = {k: v for k, v in taught.items() if k in own and own[k].shape == v.shape}
        if not shared:
            raise ValueError(f'train.init_from_teacher: the teacher {type(self.net_t).__name__} shares no parameter '
                             f'(same name and shape) with the student {type(student).__name__}; use a '
                             'same-architecture teacher (e.g. SpikerIR with neuron: rate) or remove the key')
        student.load_state_dict(shared, strict=False)
        logger = get_root_logger()
        logger.info(f'Student initialised from the teacher: {len(shared)} of {len(own)} entries')
        if len(shared) < len(own) / 2:  # the twin was built with other arguments than the student
            differ = sorted(k for k in set(self.opt['network_g']) | set(self.opt['network_t'])
                            if k not in ('T', 'reduction_t', 'neuron')
                            and self.opt['network_g'].get(k) != self.opt['network_t'].get(k))
            args = ', '.join(f'{k}: {self.opt["network_g"].get(k)!r} vs {self.opt["network_t"].get(k)!r}'
                             for k in differ)
            logger.warning(f'train.init_from_teacher: only {len(shared)} of the student\'s {len(own)} entries have '
                           'a teacher entry of the same name and shape; the rest keeps its random initialisation. '
                           'The recipe\'s twin must be the student\'s own layers: give network_t the arguments of '
                           f'network_g{f" (network_g vs network_t: {args})" if args else ""}')

    def load_adapters_on_resume(self, adapters):
        load_path = self.opt['path'].get('pretrain_network_g')
        if not (self.opt['path'].get('resume_state') and load_path):
            return
        ckpt = read_checkpoint(load_path, 'path.pretrain_network_g', 'student checkpoint')
        if 'adapters' in ckpt:
            adapters.load_state_dict(ckpt['adapters'])
        else:
            get_root_logger().warning(f'{load_path} holds no hint adapters; they restart from initialisation')

    def check_losses(self):
        self.cri_kd, self.cri_hint = self.build_loss_opt('kd_opt'), self.build_loss_opt('hint_opt')
        if self.cri_kd is not None and self.net_t is None:
            raise ValueError('train.kd_opt needs a teacher: add network_t and path.pretrain_network_t')
        if self.kd_inputs is not None and self.cri_kd is None:
            raise ValueError('train.kd_inputs needs train.kd_opt (the loss between the student and the teacher on '
                             'those inputs) and a teacher')
        if not any((self.cri_pix, self.cri_perceptual, self.cri_fft, self.cri_kd)):
            raise ValueError('train: no loss configured; set at least one of pixel_opt, perceptual_opt, fft_opt, '
                             'kd_opt')

    def trainable_parameters(self):
        params = super().trainable_parameters()
        if self.net_hint is not None:
            params += [p for p in self.net_hint.parameters() if p.requires_grad]
        return params

    # ------------------------------------------------------------------ training step
    def feed_data(self, data):
        has_gt = data.get('has_gt')
        self.has_gt = None if has_gt is None else torch.as_tensor(has_gt, dtype=torch.bool).to(self.device)
        super().feed_data(data)

    def targets(self, t_out):
        """The reconstruction target of each sample: its gt, or the teacher's output where it has none.

        The teacher's output rather than a mask: basicsr's losses reduce over the batch (a mask would need
        per-sample terms that pixel_opt / perceptual_opt / fft_opt do not give, and would weight a labelled sample
        by how many unlabelled ones share its batch), and with KD alone these samples would keep only the
        kd_schedule's weight, which the recipe lowers to 0.1 as the ground truth takes over (there is none)."""
        gt = getattr(self, 'gt', None)
        if gt is None:
            return t_out
        if self.has_gt is None:
            return gt
        # no host synchronisation (a has_gt.all() shortcut would stall a GPU that could run ahead)
        return torch.where(self.has_gt.view(-1, *([1] * (gt.dim() - 1))), gt, t_out)

    def _refuse_missing_gt(self):
        if getattr(self, 'gt', None) is None or (self.has_gt is not None and not bool(self.has_gt.all())):
            raise ValueError('this training batch has samples without ground truth (datasets.train of type '
                             'UnlabelledImageDataset: no gt, or has_gt false), and without network_t nothing labels '
                             'them: add network_t and path.pretrain_network_t, or train on a dataset with ground '
                             'truth')

    def compute_losses(self, current_iter):
        if self.net_t is None:
            self._refuse_missing_gt()
            return super().compute_losses(current_iter)
        lq = train_speed.prepare_input(self.lq, self.speed)
        t_out, t_feats = self._teacher_forward(lq)
        self.target = self.targets(t_out)
        with train_speed.autocast_context(self.device, self.speed):
            if self.teacher_tap is not None:
                output, s_feats = self.student_tap.run(self.net_g_forward, lq)
                hints = [h.float() for h in self.net_hint(s_feats, [f.shape[-2:] for f in t_feats])]
            else:
                output = self.net_g_forward(lq)
        self.output = output.float()

        losses = self.reconstruction_losses(self.output, self.target)
        l_total = sum(losses.values())
        weight = self._kd_weight = self.kd_schedule(current_iter)
        if self.cri_hint and t_feats is not None:
            self._hint_weight = self.hint_schedule(current_iter)
            losses['l_hint'] = sum(self.cri_hint(s, t) for s, t in zip(hints, t_feats))
            l_total = l_total + self._hint_weight * losses['l_hint']
        if self.cri_kd:
            losses['l_kd'] = self.cri_kd(self.output, t_out)
            l_total = l_total + weight * losses['l_kd']
        if self.kd_inputs is not None:
            losses['l_kd_inputs'] = self.kd_inputs['loss_weight'] * self.distill_extra_inputs(lq)
            l_total = l_total + weight * losses['l_kd_inputs']
        return l_total, losses

    def extra_kd_input(self, lq):
        """A batch the reconstruction loss never sees (train.kd_inputs), drawn from the model's own generator."""
        if self.kd_inputs['type'] == 'noise':  # on the clean crops: the targets (the teacher's output where no gt)
            clean = self.target
            noise = torch.randn(clean.shape, generator=self.kd_generator).to(clean.device, clean.dtype)
            return train_speed.prepare_input(clean + noise * (self.kd_inputs['sigma'] / 255.), self.speed)
        k, flip = torch.randint(0, 4, (), generator=self.kd_generator).item(), \
            torch.randint(0, 2, (), generator=self.kd_generator).item()
        if k == 0 and not flip:
            flip = 1  # never the identity: that batch is already distilled
        x = torch.rot90(lq, k, dims=(-2, -1))
        return torch.flip(x, dims=(-1,)) if flip else x

    def distill_extra_inputs(self, lq):
        """kd_opt between the student and the teacher on an extra batch (output distillation only)."""
        x = self.extra_kd_input(lq)
        with torch.no_grad(), train_speed.autocast_context(self.device, self.speed):
            target = self._net_t_fwd(x)
        with train_speed.autocast_context(self.device, self.speed):
            output = self.net_g_forward(x)
        return self.cri_kd(output.float(), target.float())

    def get_current_log(self):
        log = super().get_current_log()
        if self._kd_weight is not None:
            log['kd_weight'] = float(self._kd_weight)
        if self._hint_weight is not None and self.hint_schedule is not self.kd_schedule:
            log['hint_weight'] = float(self._hint_weight)
        return log

    # ------------------------------------------------------------------ checkpoints and resume
    def networks_to_save(self):
        nets, keys = super().networks_to_save()
        if self.net_hint is not None:
            nets.append(self.net_hint)
            keys.append('adapters')
        return nets, keys

    def extra_training_state(self):
        if self.net_t is None:
            return {}
        state = {'kd_schedule': self.kd_schedule.state_dict()}
        if self.hint_schedule is not self.kd_schedule:
            state['hint_schedule'] = self.hint_schedule.state_dict()
        if self.kd_generator is not None:
            state['kd_inputs_rng'] = self.kd_generator.get_state()
        return state

    def load_extra_training_state(self, resume_state):
        if self.net_t is None:
            return
        for key, schedule in (('kd_schedule', self.kd_schedule), ('hint_schedule', self.hint_schedule)):
            if key == 'hint_schedule' and schedule is self.kd_schedule:
                continue
            if key in resume_state and schedule.load_state_dict(resume_state[key]):
                get_root_logger().warning(f'train.{key} differs from the resumed training state; the saved '
                                          f'schedule is kept: {schedule.config()}')
        if self.kd_generator is not None and 'kd_inputs_rng' in resume_state:
            self.kd_generator.set_state(resume_state['kd_inputs_rng'])

    def networks_reading_the_input(self):
        nets = super().networks_reading_the_input()
        if self.net_t is not None:
            nets['network_t'] = self.net_t
        return nets

    reads_distillation_keys = True

    @classmethod
    def check_model_options(cls, opt):
        """network_t's type first (a teacher is what the distillation keys are about), then SpikingSRModel's."""
        if opt.get('network_t'):
            check_network_opt(opt['network_t'], 'network_t')
        return super().check_model_options(opt)

    @classmethod
    def launch_checks(cls, opt):
        """SpikingSRModel's checks, then the teacher: its checkpoint exists (or: which options file trains it) and
        fits network_t, and the hint layers exist in both networks; all before basicsr creates any folder."""
        super().launch_checks(opt)
        if opt.get('network_t') and opt.get('is_train', True):
            check_teacher(opt)

    @classmethod
    def frozen_networks(cls, opt):
        return ('network_t',)


def check_teacher(opt):
    """The teacher checkpoint exists and fits network_t; the hint layers name modules of both networks."""
    path_opt, train_opt = opt['path'], opt.get('train') or {}
    path = path_opt.get('pretrain_network_t')
    run_checks.check_checkpoint_exists(path, 'path.pretrain_network_t', 'teacher checkpoint')
    teacher = run_checks.meta_network(opt['network_t'], 'network_t')
    if teacher is None:
        return
    load_weights(teacher, *network_checkpoint(opt, 't'), net_opt=opt['network_t'], check_only=True)
    run_checks.check_input_channels(opt, {'network_t': teacher}, 'cpu')
    student = run_checks.meta_network(opt['network_g'], 'network_g')
    if student is not None and (train_opt.get('hint_opt') or train_opt.get('hint_layers')):
        pairs = parse_hint_layers(train_opt.get('hint_layers') or default_hint_layers(student, teacher))
        FeatureTap(student, [p[0] for p in pairs], 'student')
        FeatureTap(teacher, [p[1] for p in pairs], 'teacher')


def check_kd_inputs(spec):
    """The validated ``train.kd_inputs`` (with loss_weight filled in), or None."""
    if spec is None:
        return None
    valid = ', '.join(KD_INPUT_TYPES)
    if not isinstance(spec, dict) or spec.get('type') not in KD_INPUT_TYPES:
        raise ValueError(f'train.kd_inputs must be a mapping with type one of {valid} (e.g. {{type: transform}} '
                         f'or {{type: noise, sigma: 25}}), got {spec!r}')
    unknown = set(spec) - KD_INPUT_TYPES[spec['type']]
    if unknown:
        raise ValueError(f'train.kd_inputs: keys {sorted(unknown)} are not used by type {spec["type"]!r}; valid '
                         f'keys: {sorted(KD_INPUT_TYPES[spec["type"]])}')
    if spec['type'] == 'noise' and not (isinstance(spec.get('sigma'), (int, float)) and spec['sigma'] > 0):
        raise ValueError(f'train.kd_inputs: type noise needs sigma > 0 (noise std in 0-255 units), got '
                         f'{spec.get("sigma")!r}')
    return dict(spec, loss_weight=float(spec.get('loss_weight', 1.0)))
