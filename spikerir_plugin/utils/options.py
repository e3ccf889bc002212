"""Options for building a model in this process, outside basicsr's train script (benchmarks, notebooks)."""
import copy


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
