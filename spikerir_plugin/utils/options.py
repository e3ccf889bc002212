"""The plugin's option keys in one place (what each does), their validation, the one way from options to a network
(``network_from_options``), and options for in-process runs.

basicsr reads options with ``.get`` and ignores every key it does not know, so a misspelt plugin key
(``train.hint_opts``) trains without hints and exits 0. ``check_option_keys`` rejects unknown keys in the sections
the plugin reads, naming the key, its section and the nearest valid keys. Keys that belong to basicsr are accepted
wherever basicsr reads them, and sections that only basicsr reads (``logger``, ``val`` outside ``val.tile``,
``dist_params``, the datasets of basicsr's own types) are left to it.
"""
import copy
import difflib
import inspect

# train: the keys basicsr's models and train pipeline read (any of its models, so options copied from one of them
# stay valid) and the plugin's own, with what the plugin's keys do.
BASICSR_TRAIN_KEYS = (
    'total_iter', 'warmup_iter', 'ema_decay', 'optim_g', 'scheduler', 'pixel_opt', 'perceptual_opt', 'gan_opt',
    'optim_d', 'net_d_iters', 'net_d_init_iters', 'ldl_opt', 'feature_matching_opt', 'flow_lr_mul', 'dcn_lr_mul',
    'fix_flow', 'lr_flow', 'path_reg_weight', 'net_g_reg_every', 'net_d_reg_every', 'mixing_prob', 'r1_reg_weight',
    'gan_opt_d', 'use_grad_clip', 'tsa_iter', 'path_batch_shrink')
PLUGIN_TRAIN_KEYS = {
    'ema_warmup': 'true (default): the EMA decay warms up with the number of updates; false: basicsr\'s fixed decay',
    'fft_opt': 'a frequency-domain loss (FFTLoss) next to pixel_opt / perceptual_opt',
    'energy_opt': 'spike-energy penalty or budget (SynOpsLoss: loss_weight, unit, target_mj | target_synops, '
                  'image_size, e_ac) on the training forward\'s spikes; optional schedule (kd_schedule forms)',
}
DISTILL_TRAIN_KEYS = {
    'kd_opt': 'output distillation loss (student output against teacher output)',
    'hint_opt': 'feature-hint loss (HintLoss)',
    'hint_layers': '[[student_module, teacher_module], ...]; default: the levels both archs declare',
    'hint_probe_size': 'side of the dummy input used once to learn hint shapes (default 64)',
    'hint_adapter': 'conv1x1 (default) | conv3x3 | mlp | identity',
    'kd_schedule': 'weight of output KD (and of the hints unless hint_schedule is set) over iterations',
    'hint_schedule': 'weight of the hints over iterations (default: kd_schedule)',
    'kd_inputs': 'extra inputs labelled by the teacher alone: {type: transform} or {type: noise, sigma: S}',
    'init_from_teacher': 'start the student from the teacher\'s entries of the same name and shape',
}
DISTILL_PATH_KEYS = {
    'pretrain_network_t': 'the teacher checkpoint (required with network_t)',
    'param_key_t': 'the entry of the teacher file holding its weights (default params; ~ for a raw state dict)',
    'strict_load_t': 'true (default): every teacher key must match',
}
# path: what basicsr's parse_options and models read; the per-network keys for each network_<x> of the options
BASICSR_PATH_KEYS = ('resume_state', 'ignore_resume_networks', 'root', 'experiments_root', 'models',
                     'training_states', 'log', 'visualization', 'results_root')
NETWORK_PATH_PREFIXES = ('pretrain_network_', 'param_key_', 'strict_load_')
SPEED_KEYS = ('channels_last', 'bf16', 'compile', 'checkpoint', 'teacher_bf16', 'teacher_cuda_graph', 'cuda_graph')
SPEED_BOOL_KEYS = ('channels_last', 'bf16', 'checkpoint', 'teacher_bf16', 'teacher_cuda_graph', 'cuda_graph')
SPEED_COMPILE_KEYS = ('backend', 'mode', 'fullgraph', 'dynamic', 'options')  # torch.compile's arguments
TILE_KEYS = {'size': 'tile side in pixels', 'overlap': 'overlap between tiles in pixels (default 0)'}
# datasets: the keys basicsr's loader builder reads for any dataset, and those of the plugin's datasets
BASICSR_DATASET_KEYS = ('name', 'type', 'phase', 'scale', 'io_backend', 'batch_size_per_gpu', 'num_worker_per_gpu',
                        'dataset_enlarge_ratio', 'prefetch_mode', 'pin_memory', 'persistent_workers',
                        'num_prefetch_queue', 'use_shuffle')
PLUGIN_DATASET_KEYS = {
    'GaussianDenoiseDataset': ('dataroot_gt', 'sigma', 'sigma_range', 'in_ch', 'clip', 'noise_seed',
                               'crop_to_multiple', 'gt_size', 'use_hflip', 'use_rot'),
    # degraded images without ground truth, optionally mixed with a labelled dataset (data/unlabelled_image_dataset.py)
    'UnlabelledImageDataset': ('dataroot_lq', 'in_ch', 'gt_size', 'use_hflip', 'use_rot', 'labelled',
                               'labelled_repeat'),
    # rain streaks drawn on clean images (data/rain_streak_dataset.py)
    'RainStreakDataset': ('dataroot_gt', 'density', 'length', 'angle', 'intensity', 'in_ch', 'rain_seed',
                          'crop_to_multiple', 'gt_size', 'use_hflip', 'use_rot'),
}


class OptionKeyError(ValueError):
    """Unknown option keys; the message names each with its section and the nearest valid keys."""


def unknown_keys(section, keys, valid):
    """'section.key' lines for the keys of ``keys`` not in ``valid``, each with its nearest valid keys."""
    lines = []
    valid = list(dict.fromkeys(str(v) for v in valid))
    for key in keys:
        if key in valid:
            continue
        near = difflib.get_close_matches(str(key), valid, n=3, cutoff=0.75)
        hint = f' (did you mean {" or ".join(near)}?)' if near else ''
        lines.append(f'{section}.{key}{hint}')
    return lines


def _arch_arguments(net_opt):
    """The constructor arguments of the arch ``net_opt`` names, or None when it takes **kwargs or is unknown."""
    from basicsr.utils.registry import ARCH_REGISTRY
    name = net_opt.get('type') if isinstance(net_opt, dict) else None
    if not isinstance(name, str) or name not in ARCH_REGISTRY:
        return None
    try:
        params = inspect.signature(ARCH_REGISTRY.get(name)).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return ['type'] + [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]


def unknown_option_keys(opt, distill=False):
    """'section.key (did you mean ...?)' for each unknown key of the sections a plugin model reads."""
    problems = []
    train_valid = list(BASICSR_TRAIN_KEYS) + list(PLUGIN_TRAIN_KEYS) + (list(DISTILL_TRAIN_KEYS) if distill else [])
    if isinstance(opt.get('train'), dict):
        problems += unknown_keys('train', opt['train'], train_valid)
    networks = [k[len('network_'):] for k in opt if k.startswith('network_')]
    if isinstance(opt.get('path'), dict):
        path_valid = list(BASICSR_PATH_KEYS) + [p + n for n in networks for p in NETWORK_PATH_PREFIXES] + (
            list(DISTILL_PATH_KEYS) if distill else [])  # (without network_t the model says that it needs one)
        problems += unknown_keys('path', opt['path'], path_valid)
    for key in ('network_g', 'network_t'):
        arguments = _arch_arguments(opt.get(key))
        if arguments is not None:
            problems += [f'{line} (not an argument of {opt[key]["type"]})' if '(did you mean' not in line else line
                         for line in unknown_keys(key, opt[key], arguments)]
    tile = (opt.get('val') or {}).get('tile') if isinstance(opt.get('val'), dict) else None
    if isinstance(tile, dict):
        problems += unknown_keys('val.tile', tile, list(TILE_KEYS))
    if isinstance(opt.get('speed'), dict):
        problems += unknown_keys('speed', opt['speed'], list(SPEED_KEYS))
    for phase, dataset_opt in (opt.get('datasets') or {}).items():
        if isinstance(dataset_opt, dict) and dataset_opt.get('type') in PLUGIN_DATASET_KEYS:
            valid = list(BASICSR_DATASET_KEYS) + list(PLUGIN_DATASET_KEYS[dataset_opt['type']])
            problems += unknown_keys(f'datasets.{phase}', dataset_opt, valid)
    return problems


def check_option_keys(opt, distill=False):
    """An OptionKeyError listing every unknown key of the sections a plugin model reads (see the module
    docstring). ``distill``: the model reads the distillation keys too."""
    problems = unknown_option_keys(opt, distill)
    if problems:
        raise OptionKeyError(f'unknown option key{"s" if len(problems) > 1 else ""} for {opt.get("model_type")}: '
                             f'{"; ".join(problems)}. basicsr would ignore them silently; fix or remove them')


def student_alone_options(opt, name=None):
    """A copy of distillation options for the same student trained alone: same data, seed, optimizer, schedule,
    iterations and reconstruction losses; no teacher and no distillation term (model SpikingSRModel)."""
    alone = copy.deepcopy(opt)
    alone.pop('network_t', None)
    alone['model_type'] = 'SpikingSRModel'
    for key in DISTILL_TRAIN_KEYS:
        (alone.get('train') or {}).pop(key, None)
    for key in DISTILL_PATH_KEYS:
        (alone.get('path') or {}).pop(key, None)
    ignored = [n for n in (alone.get('path') or {}).get('ignore_resume_networks') or [] if n != 'network_t']
    if 'path' in alone and 'ignore_resume_networks' in alone['path']:
        alone['path']['ignore_resume_networks'] = ignored or None
    if name is not None:
        alone['name'] = name
    return alone


# ---------------------------------------------------------------------------------------------- networks
DEFAULT_PARAM_KEY = 'params_ema'  # what validation reports; a file without it gives params (checkpoint.load_weights)
# per network of the options: the trained network is read as validation reports it; a teacher (path.param_key_t)
# as basicsr reads a pretrained network
DEFAULT_PARAM_KEYS = {'g': DEFAULT_PARAM_KEY, 't': 'params'}


def check_network_opt(net_opt, key):
    """A clear error for a missing or unknown network ``type`` (basicsr's says only 'No object named ...')."""
    from basicsr.utils.registry import ARCH_REGISTRY
    if not isinstance(net_opt, dict) or 'type' not in net_opt:
        raise ValueError(f'{key} must be a mapping with a `type` (a registered arch) and its arguments, '
                         f'got {net_opt!r}')
    net_type = net_opt['type']
    if net_type not in ARCH_REGISTRY and f'{net_type}_basicsr' not in ARCH_REGISTRY:
        names = ', '.join(sorted(ARCH_REGISTRY.keys()))
        raise KeyError(f'{key}.type: unknown arch {net_type!r}; registered archs: {names}')


def network_checkpoint(opt, which='g'):
    """(checkpoint, param key, strict) of ``network_<which>`` from the options' ``path`` section: its
    ``pretrain_network_<which>``, its ``param_key_<which>`` (``~``: a raw state dict; absent: DEFAULT_PARAM_KEYS) and
    ``strict_load_<which>`` (default true). The one reading of these keys, for the models and the tools."""
    path_opt = opt.get('path') or {}
    key = f'param_key_{which}'
    default = DEFAULT_PARAM_KEYS.get(which, DEFAULT_PARAM_KEY)
    return (path_opt.get(f'pretrain_network_{which}'), path_opt[key] if key in path_opt else default,
            path_opt.get(f'strict_load_{which}', True))


def network_from_options(net_opt, key='network_g', checkpoint=None, param_key=DEFAULT_PARAM_KEY, strict=True,
                         which='g', option=None):
    """The arch of ``net_opt`` (``key`` names it in errors) with the weights of ``checkpoint`` loaded through the
    plugin's one checkpoint reader (``option`` names the file's option in errors; no checkpoint: the arch's own
    initialisation). Built from the registry directly, so no basicsr log is written."""
    from basicsr.utils.registry import ARCH_REGISTRY
    from .checkpoint import load_weights
    check_network_opt(net_opt, key)
    name = net_opt['type'] if net_opt['type'] in ARCH_REGISTRY else f'{net_opt["type"]}_basicsr'
    args = {k: v for k, v in net_opt.items() if k != 'type'}
    try:
        net = ARCH_REGISTRY.get(name)(**args)
    except TypeError as error:
        raise ValueError(f'{key}: {net_opt["type"]} cannot be built from {args} ({error})') from None
    if checkpoint:
        load_weights(net, checkpoint, param_key, strict, which=which, option=option, net_opt=net_opt)
    return net


def in_process_train_options(opt, workdir, device='cpu'):
    """A copy of a training options dict with what basicsr's ``parse_options`` would add for a single process
    (``is_train``, ``dist``, ``rank``, ``world_size``, ``num_gpu`` for ``device``) and every output path of
    ``path`` pointed at ``workdir``, ready for ``basicsr.models.build_model``."""
    opt = copy.deepcopy(opt)
    opt.update(is_train=True, dist=False, rank=0, world_size=1, num_gpu=1 if str(device).startswith('cuda') else 0)
    opt.setdefault('scale', 1)
    opt['path'] = dict(opt.get('path') or {}, **{key: workdir for key in (
        'experiments_root', 'models', 'training_states', 'log', 'visualization')})
    return opt
