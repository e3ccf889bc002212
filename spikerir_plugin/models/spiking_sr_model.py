"""SpikingSRModel: basicsr's SRModel with what any spiking restoration run needs.

Built through SRModel's own ``__init__`` (network, DDP, pretrained weights, training settings); on top of it:

    train.optim_g.type     Adam | AdamW | SGD (basicsr 1.4.2 knows only Adam)
    train.scheduler.type   basicsr's MultiStepLR / CosineAnnealingRestartLR, or CosineAnnealingLR (T_max, eta_min)
    train.fft_opt          a frequency-domain loss (FFTLoss) next to pixel_opt / perceptual_opt
    train.energy_opt       a spike-energy penalty or budget (losses/energy_loss.py SynOpsLoss) on the training
                           forward's own spikes, optional ``schedule`` of its weight (kd_schedule.py forms); logged as
                           l_energy with the measured synops per image and firing_rate
    train.ema_decay        EMA of parameters *and* floating buffers (tdBN/BN running statistics; basicsr's EMA
                           averages parameters only, so a BN student's EMA kept its initial statistics)
    train.ema_warmup       true (default): the update after iteration i decays by min(ema_decay, (i - 1) / (i + 8))
                           (the first update copies the weights, then TensorFlow's (1 + n) / (10 + n) form), so a
                           short run's EMA is not mostly its random initialisation (0.999 ** 600 = 0.55); false:
                           basicsr's fixed decay from the first update
    val.tile               {size, overlap}: tiled validation/test for large images (inference/tiled.py)
    speed                  {channels_last, bf16, compile, checkpoint}: training fast paths (models/speed.py)

and exact resume (exact_resume.py): the batch order and random streams continue where the saved run stopped,
training states, weights and validation images are written atomically, damaged checkpoints are skipped or named.
Device, dataset-path and channel mistakes fail before training with the option to change (run_checks.py); a
GT/LQ size mismatch names the pair of files (the launch checks, data/pair_errors.py). Losses are reduced across ranks when they are
logged, not in every step (a per-step host synchronisation would stall a GPU that could run ahead).

Subclasses extend the training step through ``compute_losses`` and the saved state through
``extra_training_state`` / ``load_extra_training_state``.
"""
import os.path as osp
from collections import OrderedDict

import torch
from basicsr.losses import build_loss
from basicsr.models import lr_scheduler as bsr_lr
from basicsr.models.sr_model import SRModel
from basicsr.metrics import calculate_metric
from basicsr.utils import get_root_logger, tensor2img
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import MODEL_REGISTRY
from torch.optim import lr_scheduler as torch_lr

from spikerir_plugin.data.pair_errors import check_pair_sizes
from spikerir_plugin.models import speed as train_speed
from spikerir_plugin.utils.atomic import atomic_torch_save, basicsr_imwrite
from spikerir_plugin.utils.checkpoint import load_weights
from spikerir_plugin.inference import inference_network
from spikerir_plugin.utils import console
from spikerir_plugin.utils.options import check_network_opt, check_option_keys
from spikerir_plugin.losses.energy_loss import check_energy_opt
from . import exact_resume, run_checks
from .kd_schedule import KDSchedule
from spikerir_plugin.inference.tiled import check_tile_opt, tiled_forward

OPTIMIZERS = {'Adam': torch.optim.Adam, 'AdamW': torch.optim.AdamW, 'SGD': torch.optim.SGD}
SCHEDULERS = {
    'MultiStepLR': bsr_lr.MultiStepRestartLR,
    'MultiStepRestartLR': bsr_lr.MultiStepRestartLR,
    'CosineAnnealingRestartLR': bsr_lr.CosineAnnealingRestartLR,
    'CosineAnnealingLR': torch_lr.CosineAnnealingLR,  # plain cosine: T_max, eta_min
}


@MODEL_REGISTRY.register()
class SpikingSRModel(SRModel):
    """SRModel for spiking (and any other) restoration networks; see the module docstring."""

    reads_distillation_keys = False  # train.kd_opt, network_t, ... (utils/options.py)
    cri_energy = energy_schedule = None  # train.energy_opt (build_energy_loss)

    def __init__(self, opt):
        self.speed, self.tile = self.check_model_options(opt)
        run_checks.check_device(opt)
        self._step_losses = OrderedDict()
        super().__init__(opt)
        run_checks.check_input_channels(self.opt, self.networks_reading_the_input(), self.device)

    # ------------------------------------------------------------------ networks
    def model_to_device(self, net):
        """Speed switches (channels_last, bf16 neuron inputs, block checkpointing) act on the bare network before
        DDP registers its gradient buckets."""
        return super().model_to_device(train_speed.prepare_model(net.to(self.device), self.speed))

    def load_network(self, net, load_path, strict=True, param_key='params'):
        """The plugin's checkpoint reader: clear errors, raw or official state dicts, params/params_ema fallback."""
        fix = None
        if self.opt['path'].get('resume_state'):
            fix = (f'It was set from path.resume_state {self.opt["path"]["resume_state"]!r}: point that at an earlier '
                   'state, or use --auto_resume, which skips damaged pairs.')
        load_weights(self.get_bare_model(net), load_path, param_key, strict, which='g', fix=fix,
                     net_opt=self.opt.get('network_g'))

    def bare_net_g(self):
        return self.get_bare_model(self.net_g)

    def networks_reading_the_input(self):
        """{option key: bare network} of the networks fed the dataset's LQ images (checked for channels)."""
        return {'network_g': self.bare_net_g()}

    @property
    def net_g_forward(self):
        """The training forward: net_g itself, or its torch.compile'd call (built once, on first use)."""
        if not hasattr(self, '_net_g_fwd'):
            self._net_g_fwd = train_speed.maybe_compile(self.net_g, self.speed)
        return self._net_g_fwd

    # ------------------------------------------------------------------ training setup
    def init_training_settings(self):
        self.net_g.train()
        train_opt = self.opt['train']
        self.ema_decay = train_opt.get('ema_decay', 0)
        self.ema_warmup = bool(train_opt.get('ema_warmup', True))
        if self.ema_decay > 0:
            get_root_logger().info(f'Use Exponential Moving Average with decay: {self.ema_decay}')
            self.net_g_ema = self.build_ema_network()
        self.cri_pix = self.build_loss_opt('pixel_opt')
        self.cri_perceptual = self.build_loss_opt('perceptual_opt')
        self.cri_fft = self.build_loss_opt('fft_opt')
        self.cri_energy = self.build_energy_loss()
        self.check_losses()
        self.setup_optimizers()
        self.setup_schedulers()

    def build_ema_network(self):
        from basicsr.archs import build_network
        net = build_network(self.opt['network_g']).to(self.device)
        load_path = self.opt['path'].get('pretrain_network_g')
        if load_path is not None:  # params_ema, else params, else a raw state dict (e.g. official weights)
            load_weights(net, load_path, 'params_ema', self.opt['path'].get('strict_load_g', True), which='g',
                         net_opt=self.opt['network_g'])
        else:
            net.load_state_dict(self.bare_net_g().state_dict())
        return net.eval()

    def build_loss_opt(self, key):
        spec = self.opt['train'].get(key)
        return build_loss(dict(spec)).to(self.device) if spec else None

    def build_energy_loss(self):
        """train.energy_opt: SynOpsLoss hooked on the bare student (its DDP wrapper calls the same modules), and
        the schedule of its weight (None: constant 1)."""
        spec = self.opt['train'].get('energy_opt')
        if not spec:
            return None
        spec = check_energy_opt(spec)
        schedule = spec.pop('schedule', None)  # (speed.compile is refused by check_model_options)
        self.energy_schedule = None if schedule is None else KDSchedule.from_opt(schedule, 'energy_opt.schedule')
        return build_loss(spec).attach(self.bare_net_g())

    def check_losses(self):
        if not any((self.cri_pix, self.cri_perceptual, self.cri_fft)):
            raise ValueError('train: no loss configured; set at least one of pixel_opt, perceptual_opt, fft_opt')

    def trainable_parameters(self):
        return [p for p in self.net_g.parameters() if p.requires_grad]

    def get_optimizer(self, optim_type, params, lr, **kwargs):
        if optim_type not in OPTIMIZERS:
            raise ValueError(f'train.optim_g.type: unknown optimizer {optim_type!r}; valid: {", ".join(OPTIMIZERS)}')
        return OPTIMIZERS[optim_type](params, lr, **kwargs)

    def setup_optimizers(self):
        optim_opt = dict(self.opt['train']['optim_g'])  # a copy: basicsr's pop() made setup non-repeatable
        optim_type = optim_opt.pop('type', None)
        self.optimizer_g = self.get_optimizer(optim_type, self.trainable_parameters(), **optim_opt)
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
    def reconstruction_losses(self, output, gt):
        """pixel_opt, perceptual_opt and fft_opt terms of ``output`` against ``gt`` (an ordered dict)."""
        losses = OrderedDict()
        if self.cri_pix:
            losses['l_pix'] = self.cri_pix(output, gt)
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(output, gt)
            for name, value in (('l_percep', l_percep), ('l_style', l_style)):
                if value is not None:
                    losses[name] = value
        if self.cri_fft:
            losses['l_fft'] = self.cri_fft(output, gt)
        return losses

    def compute_losses(self, current_iter):
        """Forward the batch and return (total loss, {name: term}); sets ``self.output``."""
        lq = train_speed.prepare_input(self.lq, self.speed)
        with train_speed.autocast_context(self.device, self.speed):
            output = self.net_g_forward(lq)
        self.output = output.float()  # losses run in fp32
        losses = self.reconstruction_losses(self.output, self.gt)
        return sum(losses.values()), losses

    def forward_backward(self, current_iter):
        """compute_losses + backward; returns the detached terms (and l_total). No host synchronisation."""
        if self.cri_energy is None:
            l_total, losses = self.compute_losses(current_iter)
        else:  # the energy term reads the spikes of the first student forward of compute_losses (any subclass's)
            with self.cri_energy.recording():
                l_total, losses = self.compute_losses(current_iter)
            l_total = self.add_energy_loss(l_total, losses, current_iter)
        losses['l_total'] = l_total
        l_total.backward()
        logged = OrderedDict((k, v.detach()) for k, v in losses.items())
        if self.cri_energy is not None:
            logged.update(self.cri_energy.measured)  # synops per image of the training crop, mean firing rate
            if self.energy_schedule is not None:
                logged['energy_weight'] = torch.tensor(self._energy_weight, device=l_total.device)
        return logged

    def add_energy_loss(self, l_total, losses, current_iter):
        """l_total + schedule(it) * SynOpsLoss of the recorded forward; the term goes into ``losses['l_energy']``."""
        learning = not self.cri_energy.learnt  # the first recorded forward learns which layer reads which neuron
        losses['l_energy'] = self.cri_energy()
        if learning and self.cri_energy.uncovered:
            get_root_logger().warning(f'train.energy_opt: these layers read spikes that pass through other operations '
                                      f'first and are not in l_energy: {", ".join(self.cri_energy.uncovered)}')
        self._energy_weight = 1.0 if self.energy_schedule is None else self.energy_schedule(current_iter)
        return l_total + self._energy_weight * losses['l_energy']

    def optimize_parameters(self, current_iter):
        self.optimizer_g.zero_grad()
        self._step_losses = self.forward_backward(current_iter)
        self.optimizer_g.step()
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay_at(current_iter))

    def get_current_log(self):
        """The last step's losses averaged over ranks (basicsr's loop calls this on every rank, at print_freq)."""
        return self.reduce_loss_dict(self._step_losses)

    def ema_decay_at(self, current_iter):
        """The EMA decay of the update made at basicsr's ``current_iter`` (1 for the first step). Derived from the
        iteration alone, so a resumed run continues the same schedule."""
        if not self.ema_warmup:
            return self.ema_decay
        previous = max(int(current_iter) - 1, 0)  # updates made before this one
        return min(self.ema_decay, previous / (previous + 9))

    def model_ema(self, decay=0.999):
        """EMA over parameters *and* floating buffers (tdBN running stats); integer buffers are copied."""
        ema_state = self.net_g_ema.state_dict()
        with torch.no_grad():
            for key, value in self.bare_net_g().state_dict().items():
                if ema_state[key].dtype.is_floating_point:
                    ema_state[key].mul_(decay).add_(value, alpha=1 - decay)
                else:
                    ema_state[key].copy_(value)

    def feed_data(self, data):
        check_pair_sizes(data, self.opt.get('scale', 1), self._fed_dataset)  # names the files and the dataset
        if 'gt' not in data and hasattr(self, 'gt'):
            del self.gt  # basicsr's feed_data keeps the previous batch's gt when a batch has none
        super().feed_data(data)

    @property
    def _fed_dataset(self):
        """The name of the dataset whose batches feed_data receives: the one being validated, else the train set."""
        return getattr(self, '_validated_dataset', None) or ((self.opt.get('datasets') or {}).get('train') or {}).get(
            'name')

    # ------------------------------------------------------------------ inference
    def validated_network(self):
        """The network validation and testing run: the EMA copy when there is one, else the bare net_g."""
        return self.net_g_ema if hasattr(self, 'net_g_ema') else self.bare_net_g()

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        """SRModel's validation (the same metrics, best-metric records, log lines and image names), with the images
        written atomically: a run killed while it validates never leaves a truncated PNG."""
        dataset_name = dataloader.dataset.opt['name']
        metrics = self.opt['val'].get('metrics')
        if metrics is not None:
            self._initialize_best_metric_results(dataset_name)
            self.metric_results = {name: 0 for name in metrics}
        bar = console.progress(total=len(dataloader), unit='image') if self.opt['val'].get('pbar', False) else None
        count = 0
        for val_data in dataloader:
            img_name = osp.splitext(osp.basename(val_data['lq_path'][0]))[0]
            self.feed_data(val_data)
            self.test()
            visuals = self.get_current_visuals()
            metric_data = {'img': tensor2img([visuals['result']])}
            if 'gt' in visuals:
                metric_data['img2'] = tensor2img([visuals['gt']])
                del self.gt
            del self.lq, self.output  # free the images before the next one (as SRModel does)
            torch.cuda.empty_cache()
            if save_img:
                basicsr_imwrite(metric_data['img'], self.validation_image_path(img_name, dataset_name, current_iter))
            for name, metric_opt in (metrics or {}).items():
                self.metric_results[name] += calculate_metric(metric_data, metric_opt)
            count += 1
            if bar is not None:
                bar.update(1)
                bar.set_description(f'Test {img_name}')
        if bar is not None:
            bar.close()
        if metrics is not None and count:
            for name in self.metric_results:
                self.metric_results[name] /= count
                self._update_best_metric_result(dataset_name, name, self.metric_results[name], current_iter)
            self._log_validation_metric_values(current_iter, dataset_name, tb_logger)

    def validation_image_path(self, img_name, dataset_name, current_iter):
        """Where SRModel puts a validation image: per image and iteration in training, per dataset with the
        val.suffix (else the run's name) in testing."""
        folder = self.opt['path']['visualization']
        if self.opt['is_train']:
            return osp.join(folder, img_name, f'{img_name}_{current_iter}.png')
        suffix = self.opt['val'].get('suffix') or self.opt['name']
        return osp.join(folder, dataset_name, f'{img_name}_{suffix}.png')

    def test(self):
        """The bare (never DDP) network: rank-0-only validation through DDP would sync buffers and hang; tiled when
        val.tile is set."""
        net = self.validated_network()
        was_training = net.training
        runner = inference_network(net)
        with torch.no_grad():
            self.output = tiled_forward(runner, self.lq, *self.tile) if self.tile else runner(self.lq)
        net.train(was_training)

    # ------------------------------------------------------------------ checkpoints and resume
    def networks_to_save(self):
        """(modules, param keys) written to net_g_<iter>.pth."""
        nets, keys = [self.bare_net_g()], ['params']
        if hasattr(self, 'net_g_ema'):
            nets.append(self.net_g_ema)
            keys.append('params_ema')
        return nets, keys

    def save(self, epoch, current_iter):
        # called on every rank: gather each rank's random streams for the training state rank 0 writes
        self._rng_ranks = exact_resume.gather_rng_states() if current_iter != -1 else None
        nets, keys = self.networks_to_save()
        self.save_network(nets, 'net_g', current_iter, param_key=keys)
        self.save_training_state(epoch, current_iter)

    @master_only
    def save_network(self, net, net_label, current_iter, param_key='params'):
        """basicsr's layout ({param_key: state dict}, no 'module.' prefix, CPU tensors), written atomically."""
        import os
        label = 'latest' if current_iter == -1 else current_iter
        nets = net if isinstance(net, list) else [net]
        keys = param_key if isinstance(param_key, list) else [param_key]
        if len(nets) != len(keys):
            raise ValueError('save_network: one param_key per network')
        payload = {}
        for net_, key in zip(nets, keys):
            state = self.get_bare_model(net_).state_dict()
            payload[key] = {(k[7:] if k.startswith('module.') else k): v.cpu() for k, v in state.items()}
        atomic_torch_save(payload, os.path.join(self.opt['path']['models'], f'{net_label}_{label}.pth'))

    @master_only
    def save_training_state(self, epoch, current_iter):
        """basicsr's state plus the random streams and the subclass's extra state, written atomically.

        ``rng_ranks``: every rank's random streams in rank order, gathered by ``save``; ``rng``: rank 0's (the
        entry earlier versions wrote and read). Called without ``save``, only this process's streams are kept."""
        import os
        rng_ranks, self._rng_ranks = getattr(self, '_rng_ranks', None), None
        if current_iter == -1:
            return
        rng_ranks = rng_ranks or [exact_resume.capture_rng_state()]
        state = {'epoch': epoch, 'iter': current_iter, 'rng': rng_ranks[0], 'rng_ranks': rng_ranks,
                 'optimizers': [o.state_dict() for o in self.optimizers],
                 'schedulers': [s.state_dict() for s in self.schedulers]}
        state.update(self.extra_training_state())
        atomic_torch_save(state, os.path.join(self.opt['path']['training_states'], f'{current_iter}.state'))

    def resume_training(self, resume_state):
        super().resume_training(resume_state)
        self.load_extra_training_state(resume_state)
        if resume_state.get('rng') is not None:  # epoch-boundary resume: restore before the next loader
            exact_resume.restore_rng_state(resume_state['rng'])

    def validation(self, dataloader, current_iter, tb_logger, save_img=False):
        """basicsr's validation, leaving the training's random streams as they were (its loader iterator draws a
        seed from torch's, which the plugin's GaussianDenoiseDataset crops and noises with): training continues the
        same whether it validated or not, so a run resumed from a state saved at a validation iteration is exact.
        Pair-size errors of its batches name the dataset."""
        rng = exact_resume.capture_rng_state()
        self._validated_dataset = (getattr(dataloader.dataset, 'opt', None) or {}).get('name')
        try:
            super().validation(dataloader, current_iter, tb_logger, save_img)
        finally:
            self._validated_dataset = None
            exact_resume.restore_rng_state(rng)

    def extra_training_state(self):
        """Entries a subclass adds to the training state (a dict of tensors / plain values)."""
        return {}

    def load_extra_training_state(self, resume_state):
        pass

    # hooks called by basicsr's train pipeline through launch.py (see exact_resume.py)
    @classmethod
    def frozen_networks(cls, opt):
        """``network_*`` keys that this model never saves (resume keeps loading them from their checkpoint)."""
        return ()

    @classmethod
    def check_model_options(cls, opt):
        """(speed options, tile) of the options, or the error for network_g's type, a misspelt key or a combination
        the model refuses: speed.cuda_graph, DataParallel (num_gpu > 1 without a launcher), train.energy_opt with
        speed.compile, a bad val.tile. The one option check, run by the launch checks and again when the model is
        built (a model built in Python gets no launch checks)."""
        check_network_opt(opt.get('network_g'), 'network_g')
        check_option_keys(opt, cls.reads_distillation_keys)
        speed = train_speed.SpeedOptions.from_opt(opt)
        if speed.cuda_graph:
            raise ValueError('speed.cuda_graph is not supported by the training models (the training step logs '
                             'Python floats and reduces losses across ranks); it is measured by '
                             'benchmarks/train_step.py --cuda-graph. Use speed.compile: {mode: reduce-overhead} '
                             'for compiler-managed CUDA graphs.')
        tile = check_tile_opt((opt.get('val') or {}).get('tile'))
        num_gpu = opt.get('num_gpu')
        if opt.get('is_train') and isinstance(num_gpu, int) and num_gpu > 1 and not opt.get('dist'):
            # DataParallel replicas share the modules' forward hooks and lose BN/tdBN statistics
            raise ValueError(f'num_gpu: {num_gpu} without a launcher means DataParallel, which '
                             f'{cls.__name__} does not support; train on several GPUs with DDP: torchrun '
                             '--nproc_per_node=N spikerir_plugin/train.py -opt ... --launcher pytorch, or use one '
                             'GPU (num_gpu: 1 or CUDA_VISIBLE_DEVICES=0)')
        if opt.get('is_train') and (opt.get('train') or {}).get('energy_opt') and speed.compile_kwargs is not None:
            raise ValueError('train.energy_opt reads the spikes through forward hooks, which speed.compile does not '
                             'run as in eager mode; remove speed.compile or train.energy_opt')
        return speed, tile

    @classmethod
    def launch_checks(cls, opt):
        """Option, device and data checks that need no network; run before basicsr creates (or moves aside) the
        experiment folder."""
        cls.check_model_options(opt)
        energy = (opt.get('train') or {}).get('energy_opt') if opt.get('is_train', True) else None
        if energy:  # its keys and schedule, before any folder exists
            KDSchedule.from_opt(check_energy_opt(energy).get('schedule'), 'energy_opt.schedule')
        run_checks.check_launch(opt)
        student = run_checks.meta_network(opt['network_g'], 'network_g')
        if student is not None:
            run_checks.check_input_channels(opt, {'network_g': student}, 'cpu')

    @classmethod
    def test_launch_checks(cls, opt):
        """The checks of a test run (basicsr/test.py), before basicsr creates or moves aside results/<name>."""
        cls.launch_checks(opt)
        run_checks.check_checkpoint_exists(opt['path'].get('pretrain_network_g'), 'path.pretrain_network_g',
                                           'network_g checkpoint')

    @classmethod
    def pipeline_resume_state(cls, opt):
        """The first hook of a pipeline start: launch checks, then the resume state (exact_resume.py)."""
        cls.launch_checks(opt)
        return exact_resume.prepare_resume(opt, cls.frozen_networks(opt))

    @classmethod
    def pipeline_train_loader(cls, opt, train_loader, train_sampler, logger):
        """The hook called once the train loader exists: the (loader, sampler) the run goes on with, which skip the
        batches a resumed epoch had consumed (exact_resume.py)."""
        return exact_resume.resume_train_loader(opt, train_loader, train_sampler, logger)
