"""ANN->SNN distillation (H-KD) for spiking restoration networks, as a basicsr SRModel.

Loss (per iteration ``it``):
    pixel_opt(out, gt) [+ perceptual_opt] + fft_opt(out, gt) + kd_schedule(it) * (sum_l hint_opt(A_l(S_l), T_l)
                                                                               + kd_opt(out, teacher_out))
with S_l the student features at ``train.hint_layers`` (time-averaged), A_l 1x1 conv adapters, T_l the frozen
teacher's features. Without ``network_t`` it trains the student alone (SRModel plus AdamW/SGD, cosine LR, FFT
loss, tiling, neuron resets and buffer-aware EMA).

Plugin keys (everything else is SRModel's):
    network_t                  teacher arch spec (any registered arch); optional
    path.pretrain_network_t    teacher checkpoint (required with network_t); path.param_key_t (default params;
                               ~ for a raw state dict); path.strict_load_t (default true)
    path.ignore_resume_networks must contain network_t (else basicsr's resume looks for net_t_<iter>.pth)
    train.fft_opt, train.kd_opt, train.hint_opt   loss specs (FFTLoss, any loss, HintLoss)
    train.hint_layers          [[student_module, teacher_module], ...]; default: decoder levels (feature_hints.py)
    train.hint_probe_size      side of the dummy input used once to learn hint channels/sizes (default 64)
    speed                      {channels_last, bf16, compile} training fast-path switches (utils/speed.py);
                               cuda_graph is benchmark-only
    train.kd_schedule          weight of hint + output KD over iterations (kd_schedule.py)
    train.optim_g.type         Adam | AdamW | SGD;  train.scheduler.type: basicsr's or CosineAnnealingLR
    val.tile                   {size, overlap}: tiled validation/test (tiled_inference.py)

Checkpoints: net_g_<iter>.pth holds the bare student under ``params`` (and ``params_ema``), so it loads strictly
into the student arch; the hint adapters go under ``adapters`` in the same file, the KD schedule into the
training state (via spikerir_compat's save_training_state hook).
"""
from collections import OrderedDict

import torch
from torch.optim import lr_scheduler as torch_lr

from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.models import lr_scheduler as bsr_lr
from basicsr.models.base_model import BaseModel
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY

from spikerir_compat import torch_load
from spikerir_plugin.utils import speed as fast
from spikerir_plugin.utils.checkpoint import load_weights
from spikerir_plugin.utils.snn import reset_states, time_mean
from .feature_hints import (FeatureTap, StudentWithAdapters, default_hint_layers, parse_hint_layers,
                            probe_channels)
from .kd_schedule import KDSchedule
from .tiled_inference import check_tile_opt, tiled_forward

OPTIMIZERS = {'Adam': torch.optim.Adam, 'AdamW': torch.optim.AdamW, 'SGD': torch.optim.SGD}
SCHEDULERS = {
    'MultiStepLR': bsr_lr.MultiStepRestartLR,
    'MultiStepRestartLR': bsr_lr.MultiStepRestartLR,
    'CosineAnnealingRestartLR': bsr_lr.CosineAnnealingRestartLR,
    'CosineAnnealingLR': torch_lr.CosineAnnealingLR,  # plain cosine: T_max, eta_min
}
_IN_CHANNEL_KEYS = ('in_channels', 'inp_channels', 'img_channel', 'in_chans', 'num_in_ch', 'in_nc')


def build_registered_network(net_opt, key):
    """build_network with a clear error for an unknown ``type`` (listing the registered names)."""
    net_type = net_opt.get('type')
    if net_type not in ARCH_REGISTRY and f'{net_type}_basicsr' not in ARCH_REGISTRY:
        names = ', '.join(sorted(ARCH_REGISTRY.keys()))
        raise KeyError(f'{key}.type: unknown arch {net_type!r}; registered archs: {names}')
    return build_network(net_opt)


@MODEL_REGISTRY.register()
class SpikerIRDistillModel(SRModel):
    """SNN student (network_g) distilled from a frozen ANN teacher (network_t); see the module docstring."""

    def __init__(self, opt):
        BaseModel.__init__(self, opt)  # SRModel.__init__ would wrap the student in DDP before the adapters exist
        self.net_t = self.teacher_tap = None
        self.tile = check_tile_opt((opt.get('val') or {}).get('tile'))
        if self.is_train and opt['num_gpu'] > 1 and not opt['dist']:
            # DataParallel replicas share the module's forward hooks (the hint taps) and lose tdBN statistics
            raise ValueError(f'num_gpu: {opt["num_gpu"]} without a launcher means DataParallel, which '
                             'SpikerIRDistillModel does not support; train on several GPUs with DDP: torchrun '
                             '--nproc_per_node=N spikerir_plugin/train.py -opt ... --launcher pytorch, or use one '
                             'GPU (num_gpu: 1 or CUDA_VISIBLE_DEVICES=0)')
        self.speed = fast.SpeedOptions.from_opt(opt)
        if self.speed.cuda_graph:
            raise ValueError('speed.cuda_graph is not supported by SpikerIRDistillModel (the training step logs '
                             'Python floats and reduces losses across ranks); it is measured by '
                             'benchmarks/train_step.py --cuda-graph. Use speed.compile: {mode: reduce-overhead} '
                             'for compiler-managed CUDA graphs.')
        student = build_registered_network(opt['network_g'], 'network_g')
        load_path = opt['path'].get('pretrain_network_g')
        if load_path is not None:
            self.load_network(student, load_path, opt['path'].get('strict_load_g', True),
                              opt['path'].get('param_key_g', 'params'))
        net = student
        if self.is_train and opt.get('network_t'):
            self._check_teacher_resume()
            self.net_t = self._build_teacher()
        if self.is_train and (opt['train'].get('hint_opt') or opt['train'].get('hint_layers')):
            net = self._build_hint_wrapper(student)
            self._load_adapters_on_resume(net, load_path)
        # layout/precision switches act on the bare net before DDP registers its gradient buckets
        self.net_g = self.model_to_device(fast.prepare_model(net.to(self.device), self.speed))
        self._net_g_fwd = fast.maybe_compile(self.net_g, self.speed) if self.is_train else self.net_g
        self.print_network(self.net_g)
        if self.is_train:
            self.init_training_settings()

    # ------------------------------------------------------------------ teacher and hints
    def _check_teacher_resume(self):
        path_opt = self.opt['path']
        ignored = path_opt.get('ignore_resume_networks') or []
        if path_opt.get('resume_state') and 'network_t' not in ignored:
            raise ValueError('path.ignore_resume_networks must include network_t when resuming a distillation run: '
                             'basicsr replaced path.pretrain_network_t by '
                             f'{path_opt.get("pretrain_network_t")!r} (a net_t_<iter>.pth that is never saved). '
                             'Add `ignore_resume_networks: [network_t]` under path.')

    def _build_teacher(self):
        path_opt = self.opt['path']
        teacher = build_registered_network(self.opt['network_t'], 'network_t')
        load_weights(teacher, path_opt.get('pretrain_network_t'), path_opt.get('param_key_t', 'params'),
                     path_opt.get('strict_load_t', True))
        teacher = teacher.to(self.device).eval()  # never DDP-wrapped: it is frozen and identical on every rank
        teacher.requires_grad_(False)
        self._net_t_fwd = fast.maybe_compile(fast.prepare_model(teacher, self.speed), self.speed)
        return teacher

    def _build_hint_wrapper(self, student):
        train_opt = self.opt['train']
        if self.net_t is None:
            raise ValueError('train.hint_opt / train.hint_layers need a teacher: add network_t and '
                             'path.pretrain_network_t, or remove the hint keys')
        if not train_opt.get('hint_opt'):
            raise ValueError('train.hint_layers is set but train.hint_opt is not (e.g. {type: HintLoss, '
                             'criterion: mse, loss_weight: 1.0})')
        layers = train_opt.get('hint_layers') or default_hint_layers(student, self.net_t)
        pairs = parse_hint_layers(layers)
        s_names, t_names = [p[0] for p in pairs], [p[1] for p in pairs]
        self.teacher_tap = FeatureTap(self.net_t, t_names, 'teacher')
        in_ch = next((self.opt['network_g'][k] for k in _IN_CHANNEL_KEYS if k in self.opt['network_g']), 3)
        size = int(train_opt.get('hint_probe_size', 64))
        student = student.to(self.device)
        s_tap = FeatureTap(student, s_names, 'student')
        try:
            s_shapes = probe_channels(student, s_tap, in_ch, size, self.device)
        finally:
            s_tap.remove()
        t_shapes = probe_channels(self.net_t, self.teacher_tap, in_ch, size, self.device)
        wrapper = StudentWithAdapters(student, s_names, [s[0] for s in s_shapes], [t[0] for t in t_shapes])
        self.hint_shapes = list(zip(pairs, s_shapes, t_shapes))
        logger = get_root_logger()
        for (s_name, t_name), s_shape, t_shape in self.hint_shapes:
            resize = ' (resized)' if s_shape[1:] != t_shape[1:] else ''
            logger.info(f'Hint {s_name} {s_shape} -> 1x1 adapter -> {t_name} {t_shape}{resize} at probe size {size}')
        return wrapper

    def _load_adapters_on_resume(self, wrapper, load_path):
        if not (self.opt['path'].get('resume_state') and load_path):
            return
        ckpt = torch_load(load_path)
        if 'adapters' in ckpt:
            wrapper.adapters.load_state_dict(ckpt['adapters'])
        else:
            get_root_logger().warning(f'{load_path} holds no hint adapters; they restart from initialisation')

    def _bare_student(self):
        net = self.get_bare_model(self.net_g)
        return net.student if isinstance(net, StudentWithAdapters) else net

    # ------------------------------------------------------------------ training setup
    def init_training_settings(self):
        self.net_g.train()
        train_opt = self.opt['train']
        self.ema_decay = train_opt.get('ema_decay', 0)
        if self.ema_decay > 0:
            self.net_g_ema = build_network(self.opt['network_g']).to(self.device)
            load_path = self.opt['path'].get('pretrain_network_g')
            if load_path is not None:  # params_ema, else params, else a raw state dict (e.g. official weights)
                load_weights(self.net_g_ema, load_path, 'params_ema', self.opt['path'].get('strict_load_g', True),
                             which='g')
            else:
                self.model_ema(0)
            self.net_g_ema.eval()

        def loss(key):
            return build_loss(train_opt[key]).to(self.device) if train_opt.get(key) else None

        self.cri_pix, self.cri_perceptual, self.cri_fft = loss('pixel_opt'), loss('perceptual_opt'), loss('fft_opt')
        self.cri_kd, self.cri_hint = loss('kd_opt'), loss('hint_opt')
        if self.cri_kd is not None and self.net_t is None:
            raise ValueError('train.kd_opt needs a teacher: add network_t and path.pretrain_network_t')
        if not any((self.cri_pix, self.cri_perceptual, self.cri_fft, self.cri_kd)):
            raise ValueError('train: no loss configured; set at least one of pixel_opt, perceptual_opt, fft_opt, '
                             'kd_opt')
        self.kd_schedule = KDSchedule.from_opt(train_opt.get('kd_schedule'))
        self.setup_optimizers()
        self.setup_schedulers()

    def get_optimizer(self, optim_type, params, lr, **kwargs):
        if optim_type not in OPTIMIZERS:
            raise ValueError(f'train.optim_g.type: unknown optimizer {optim_type!r}; valid: {", ".join(OPTIMIZERS)}')
        return OPTIMIZERS[optim_type](params, lr, **kwargs)

    def setup_optimizers(self):
        optim_opt = dict(self.opt['train']['optim_g'])  # a copy: basicsr's pop() made setup non-repeatable
        optim_type = optim_opt.pop('type', None)
        params = [p for p in self.net_g.parameters() if p.requires_grad]  # student + adapters
        self.optimizer_g = self.get_optimizer(optim_type, params, **optim_opt)
        self.optimizers.append(self.optimizer_g)

    def setup_schedulers(self):
        sched_opt = dict(self.opt['train'].get('scheduler') or {})
        if not sched_opt:
            return
        sched_type = sched_opt.pop('type', None)
        if sched_type not in SCHEDULERS:
            raise ValueError(f'train.scheduler.type: unknown scheduler {sched_type!r}; valid: {", ".join(SCHEDULERS)}')
        for optimizer in self.optimizers:
            self.schedulers.append(SCHEDULERS[sched_type](optimizer, **sched_opt))

    # ------------------------------------------------------------------ training step
    def optimize_parameters(self, current_iter):
        self.optimizer_g.zero_grad()
        lq = fast.prepare_input(self.lq, self.speed)
        t_out = t_feats = None
        if self.net_t is not None:
            with torch.no_grad(), fast.autocast_context(self.device, self.speed):
                if self.teacher_tap is not None:
                    t_out, t_feats = self.teacher_tap.run(self._net_t_fwd, lq)
                    t_feats = [time_mean(f).float() for f in t_feats]
                else:
                    t_out = self._net_t_fwd(lq)
            t_out = t_out.float()
            reset_states(self.net_t)  # a spiking teacher is fine too
        with fast.autocast_context(self.device, self.speed):  # losses below run on fp32 copies
            if t_feats is not None:
                self.output, s_hints = self._net_g_fwd(lq, [f.shape[-2:] for f in t_feats])
                s_hints = [h.float() for h in s_hints]
            else:
                self.output = self._net_g_fwd(lq)
        self.output = self.output.float()

        loss_dict = OrderedDict()
        l_total = 0
        if self.cri_pix:
            loss_dict['l_pix'] = self.cri_pix(self.output, self.gt)
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(self.output, self.gt)
            for name, value in (('l_percep', l_percep), ('l_style', l_style)):
                if value is not None:
                    loss_dict[name] = value
        if self.cri_fft:
            loss_dict['l_fft'] = self.cri_fft(self.output, self.gt)
        for value in loss_dict.values():
            l_total = l_total + value
        if self.net_t is not None:
            weight = self.kd_schedule(current_iter)
            l_distill = 0
            if self.cri_hint:
                loss_dict['l_hint'] = sum(self.cri_hint(s, t) for s, t in zip(s_hints, t_feats))
                l_distill = l_distill + loss_dict['l_hint']
            if self.cri_kd:
                loss_dict['l_kd'] = self.cri_kd(self.output, t_out)
                l_distill = l_distill + loss_dict['l_kd']
            l_total = l_total + weight * l_distill
        loss_dict['l_total'] = l_total

        l_total.backward()
        self.optimizer_g.step()
        reset_states(self._bare_student())
        self._step_losses = OrderedDict((k, v.detach()) for k, v in loss_dict.items())
        self._kd_weight = weight if self.net_t is not None else None
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def get_current_log(self):
        """The last step's losses averaged over ranks, plus the KD weight. Reduced here, at print_freq (basicsr's
        loop calls this on every rank), instead of in every step: the reduction reads the values on the host, and
        a per-step host synchronisation would stall a GPU that could run ahead."""
        log = self.reduce_loss_dict(self._step_losses)
        if self._kd_weight is not None:
            log['kd_weight'] = float(self._kd_weight)
        return log

    def model_ema(self, decay=0.999):
        """EMA over parameters *and* floating buffers (tdBN running stats); integer buffers are copied."""
        ema_state = self.net_g_ema.state_dict()
        with torch.no_grad():
            for key, value in self._bare_student().state_dict().items():
                if ema_state[key].dtype.is_floating_point:
                    ema_state[key].mul_(decay).add_(value, alpha=1 - decay)
                else:
                    ema_state[key].copy_(value)

    # ------------------------------------------------------------------ inference
    def test(self):
        """Bare (never DDP) network: rank-0-only validation through DDP would sync buffers and hang."""
        net = self.net_g_ema if hasattr(self, 'net_g_ema') else self._bare_student()
        was_training = net.training
        net.eval()
        with torch.no_grad():
            if self.tile is not None:
                self.output = tiled_forward(net, self.lq, *self.tile)
            else:
                self.output = net(self.lq)
        reset_states(net)
        net.train(was_training)

    # ------------------------------------------------------------------ checkpoints
    def save(self, epoch, current_iter):
        nets, keys = [self._bare_student()], ['params']
        if hasattr(self, 'net_g_ema'):
            nets.append(self.net_g_ema)
            keys.append('params_ema')
        wrapper = self.get_bare_model(self.net_g)
        if isinstance(wrapper, StudentWithAdapters):
            nets.append(wrapper.adapters)
            keys.append('adapters')
        self.save_network(nets, 'net_g', current_iter, param_key=keys)
        self.save_training_state(epoch, current_iter)

    # spikerir_compat's BaseModel.save_training_state / resume_training call these two hooks (atomic write, RNG)
    def extra_training_state(self):
        return {'kd_schedule': self.kd_schedule.state_dict()}

    def load_extra_training_state(self, resume_state):
        if 'kd_schedule' in resume_state and self.kd_schedule.load_state_dict(resume_state['kd_schedule']):
            get_root_logger().warning('train.kd_schedule differs from the resumed training state; the saved '
                                      f'schedule is kept: {self.kd_schedule.config()}')
