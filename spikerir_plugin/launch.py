"""The plugin's only change to basicsr's behaviour: the runtime fixes basicsr 1.4.2 needs to launch and resume on
today's stack (torch 2.x, no CUDA), applied once by ``apply()`` when the plugin is imported. Each is narrow:

- ``argv``: torch>=2 launchers pass ``--local-rank=N``; basicsr's argparse knows only ``--local_rank`` (only that
  exact option is rewritten);
- ``dist``: the GPU is picked from ``LOCAL_RANK``; without CUDA the process group uses gloo (basicsr asks for nccl
  and divides by the GPU count, 0 on the CPU) and DDP gets no ``device_ids``; the group is destroyed at exit
  (basicsr never does, and gloo can abort the process in the interpreter's teardown);
- ``weights_only``: the numpy/argparse globals some official checkpoints pickle are allowed for
  ``torch.load(weights_only=True)``;
- ``resume``: basicsr's train pipeline looks up ``load_resume_state`` and ``create_train_val_dataloader`` in its
  module's globals; they are rebound so that a model class defining ``pipeline_resume_state(opt)`` and
  ``pipeline_train_loader(opt, loader, sampler, logger)`` (returning the loader and sampler the run goes on with;
  the plugin's models: exact resume, launch checks) takes over
  for its own runs, and every other model keeps basicsr's resume with the state mapped to the CPU when there is no
  CUDA (basicsr calls ``torch.cuda.current_device()`` unconditionally);
- ``test checks``: a model class defining ``test_launch_checks(opt)`` checks a test run's options after basicsr
  parses them, before its test pipeline creates (or moves aside) ``results/<name>``.

Runs whose model is basicsr's own behave as without the plugin, apart from the CPU fixes above.
"""
import os
import sys


def rewrite_local_rank_argv(argv):
    """``--local-rank=N`` / ``--local-rank N`` -> ``--local_rank ...``; nothing else changes."""
    out = []
    for arg in argv:
        if arg == '--local-rank':
            arg = '--local_rank'
        elif arg.startswith('--local-rank='):
            arg = '--local_rank=' + arg[len('--local-rank='):]
        out.append(arg)
    return out


def _model_class(opt):
    """The registered class of opt['model_type'], or None."""
    from basicsr.utils.registry import MODEL_REGISTRY
    name = opt.get('model_type')
    return MODEL_REGISTRY.get(name) if isinstance(name, str) and name in MODEL_REGISTRY else None


def resume_state_of(opt):
    """basicsr.train.load_resume_state, with the state mapped to the CPU when CUDA is absent; a model class
    defining ``pipeline_resume_state`` takes over."""
    hook = getattr(_model_class(opt), 'pipeline_resume_state', None)
    if hook is not None:
        return hook(opt)
    import torch
    from basicsr.utils import check_resume, scandir
    resume_state_path = None
    if opt['auto_resume']:
        state_path = os.path.join('experiments', opt['name'], 'training_states')
        if os.path.isdir(state_path):
            states = list(scandir(state_path, suffix='state', recursive=False, full_path=False))
            if len(states) != 0:
                states = [float(v.split('.state')[0]) for v in states]
                resume_state_path = os.path.join(state_path, f'{max(states):.0f}.state')
                opt['path']['resume_state'] = resume_state_path
    elif opt['path'].get('resume_state'):
        resume_state_path = opt['path']['resume_state']
    if resume_state_path is None:
        return None
    if torch.cuda.is_available():
        device_id = torch.cuda.current_device()
        resume_state = torch.load(resume_state_path, map_location=lambda storage, loc: storage.cuda(device_id))
    else:
        resume_state = torch.load(resume_state_path, map_location='cpu')
    check_resume(opt, resume_state['iter'])
    return resume_state


def _with_train_loader_hook(create):
    """basicsr's create_train_val_dataloader; then a model class defining ``pipeline_train_loader`` may replace the
    train loader and sampler (exact resume: one that skips the consumed batches)."""

    def create_train_val_dataloader(opt, logger):
        result = create(opt, logger)
        hook = getattr(_model_class(opt), 'pipeline_train_loader', None)
        if hook is not None:
            result = (*hook(opt, result[0], result[1], logger), *result[2:])
        return result

    create_train_val_dataloader.__wrapped__ = create
    return create_train_val_dataloader


def _bind_resume_hooks(module):
    """Rebind the resume helpers that basicsr's train_pipeline looks up in its own module's globals."""
    module.load_resume_state = resume_state_of
    module.create_train_val_dataloader = _with_train_loader_hook(module.create_train_val_dataloader)


def _with_launch_hooks(parse_options):
    """basicsr's parse_options, plus: `python basicsr/train.py` runs train.py as __main__, whose globals were
    bound before the plugin existed, so the resume hooks are bound there on its first call; a test run's options
    are checked by its model class (``test_launch_checks``) before the test pipeline touches results/."""

    def wrapped(*args, **kwargs):
        main = sys.modules.get('__main__')
        if getattr(main, 'load_resume_state', None) is not None and getattr(main, 'train_pipeline', None) \
                and getattr(main.load_resume_state, '__module__', None) == '__main__':
            _bind_resume_hooks(main)
        result = parse_options(*args, **kwargs)
        opt = result[0] if isinstance(result, tuple) else result
        if isinstance(opt, dict) and not opt.get('is_train'):
            hook = getattr(_model_class(opt), 'test_launch_checks', None)
            if hook is not None:
                hook(opt)
        return result

    wrapped.__wrapped__ = parse_options
    return wrapped


def init_dist_pytorch(backend='nccl', **kwargs):
    """basicsr.utils.dist_util._init_dist_pytorch: LOCAL_RANK picks the GPU; without CUDA the process group uses
    gloo. The group is destroyed at exit: basicsr never destroys it, and a gloo group left to the interpreter's
    teardown can abort the process (SIGABRT, "terminate called without an active exception"; pytorch/pytorch
    issue 190489), which torchrun reports as a failed run."""
    import atexit

    import torch
    import torch.distributed as dist
    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        local_rank = int(os.environ.get('LOCAL_RANK', os.environ['RANK']))
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    else:
        backend = 'gloo'
    dist.init_process_group(backend=backend, **kwargs)
    atexit.register(destroy_process_group_at_exit)


def destroy_process_group_at_exit():
    """Destroy the default process group while the interpreter is still whole (a no-op if the program did)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def model_to_device(self, net):
    """BaseModel.model_to_device: DDP without device_ids on the CPU (gloo)."""
    import torch
    from torch.nn.parallel import DataParallel, DistributedDataParallel
    net = net.to(self.device)
    if self.opt['dist']:
        find_unused_parameters = self.opt.get('find_unused_parameters', False)
        device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
        net = DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=find_unused_parameters)
    elif self.opt['num_gpu'] > 1:
        net = DataParallel(net)
    return net


def allow_checkpoint_globals():
    """The numpy/argparse globals official checkpoints pickle, for torch.load(weights_only=True)."""
    import argparse

    import numpy as np
    import torch
    # np.dtype and the class of every numeric dtype (numpy >= 1.25 pickles a dtype by its own class); not the
    # object, string, bytes and void ones, which describe arbitrary data
    numeric = (np.bool_, np.number, np.datetime64, np.timedelta64)
    dtype_classes = [type(np.dtype(t)) for t in np.sctypeDict.values()
                     if isinstance(t, type) and issubclass(t, numeric)]
    safe = [argparse.Namespace, np.dtype, *dict.fromkeys(dtype_classes)]
    scalar = getattr(getattr(np, '_core', None), 'multiarray', None)
    if scalar is not None and hasattr(scalar, 'scalar'):
        safe.append(scalar.scalar)
    torch.serialization.add_safe_globals(safe)


_applied = False


def apply():
    """Apply the fixes once (idempotent for the patches; argv is rewritten on every call)."""
    global _applied
    sys.argv[:] = rewrite_local_rank_argv(sys.argv)
    if _applied:
        return
    import basicsr.models.base_model as base_model
    import basicsr.test as bsr_test
    import basicsr.train as bsr_train
    import basicsr.utils.dist_util as dist_util
    import basicsr.utils.options as bsr_options

    allow_checkpoint_globals()
    _bind_resume_hooks(bsr_train)
    bsr_options.parse_options = _with_launch_hooks(bsr_options.parse_options)
    bsr_test.parse_options = bsr_options.parse_options  # basicsr.test imported the unwrapped one
    dist_util._init_dist_pytorch = init_dist_pytorch
    base_model.BaseModel.model_to_device = model_to_device
    _applied = True
