"""Training fast-path switches, read from the YAML section ``speed:`` (every switch off = reference numerics).

    speed:
      channels_last: false   # NHWC weights and inputs for the 2-D convs
      bf16: false            # bf16 autocast; spiking-neuron inputs and state stay fp32
      compile: false         # true, or a dict of torch.compile arguments {backend, mode, fullgraph, dynamic, options}
      checkpoint: false      # recompute each spiking residual block in backward instead of storing its activations
      teacher_bf16: false    # run the frozen teacher under bf16 autocast even when the student trains in fp32
      teacher_cuda_graph: false  # replay the teacher's forward (and its hint features) as a CUDA graph
      cuda_graph: false      # capture forward + loss + backward in one CUDA graph (spikingjelly StaticCudaGraph)

SpikingSRModel (and so SpikerIRDistillModel) reads the section for training (channels_last, bf16, compile,
checkpoint; it rejects cuda_graph, which only benchmarks/train_step.py uses). Integration order (the training step):
``net = prepare_model(net, speed)`` once before the optimizer is built; ``fwd = maybe_compile(net, speed)`` once;
per step ``with autocast_context(device, speed): out = fwd(prepare_input(x, speed)); loss = ...``, then backward and
the optimizer step. No neuron state needs resetting: the plugin's neurons start every call at rest.

What each switch does and what was checked (CPU only; the GPU effect is measured by benchmarks/train_step.py):

* channels_last: converts the weights of every 2-D conv (the 5-D Conv3d weights of the attention MLPs cannot be
  NHWC and stay as they are) and 4-D inputs. spikingjelly's multi-step convs run ``x.flatten(0, 1)`` on [T, B, C,
  H, W]; a conv output unflattened back to 5-D keeps C innermost, so the next flatten(0, 1) is again an NHWC view
  and LIF (elementwise, and the Triton LIF kernel accepts strided tensors) and tdBN preserve it. Measured on a tiny
  ESDNet: 21 of 36 conv inputs arrive NHWC; the rest are right after ``torch.cat(dim=2)`` on 5-D tensors (cat
  returns NCHW), after the input repeat over T and inside the attention's 2-channel spatial conv; those convs convert
  back themselves (NHWC weights make the conv choose NHWC). Outputs equal the NCHW path to rounding (tested).
* bf16: ``torch.autocast(device_type, bfloat16)``. spikingjelly 2.0 materialises a neuron's state ``v`` in its input's
  dtype and takes the fused LIF kernel only when ``v`` is fp32 (functional/neuron.py, ``v.dtype != torch.float32`` ->
  per-step Python reference loop, even on CUDA). tdBN returns bf16 under autocast, so ``prepare_model`` adds a
  forward pre-hook to every spikingjelly neuron that casts a low-precision input to fp32: the state stays fp32, the
  fused kernel is used, spikes come out fp32 (0/1, exact in bf16 for the next conv). The hook does nothing to fp32
  inputs, so it cannot change reference numerics.
* checkpoint: every module with an ``activation_checkpoint`` attribute (the spiking residual blocks of SpikerIR and
  ESDNet) is recomputed in backward (``torch.utils.checkpoint``, non-reentrant) instead of keeping its
  activations, about T x C x H x W x 4 bytes times a dozen per block; the block input alone is kept. Exact: the
  neurons start each call at rest, the recomputation has no randomness, and batch-norm running statistics are
  frozen during the recomputation, so outputs, gradients and running statistics equal the plain path (tested).
  Costs one more forward of the blocks.
* teacher_bf16 / teacher_cuda_graph: the distillation teacher is frozen and only runs forward under no_grad, so
  its precision and launch overhead are independent of the student's. bf16 halves its time on tensor cores (its
  outputs and features are targets, compared in fp32); the CUDA graph removes the per-kernel launch cost of a
  deep teacher (hundreds of small kernels per forward), one graph per input shape (``GraphedForward``). The
  returned tensors are the graph's static buffers, valid until the next teacher forward.
* compile: ``torch.compile`` of the module's ``__call__`` (hooks included), returned as a plain function sharing the
  module's parameters; the module itself is what gets saved, so checkpoints never gain the ``_orig_mod.`` prefix.
  spikingjelly 2.0's LIF op has a fake implementation and traces without graph breaks; the state becomes the Python
  float 0.0 at each reset, so the same guard holds every step.
* cuda_graph: ``cuda_graph_step`` wraps a function doing forward + loss + backward in spikingjelly 2.0's
  ``activation_based._cuda_graph.StaticCudaGraph`` (warm-up on a side stream, then capture; replay copies new inputs
  into static buffers; a shape change falls back to eager). Safe under these rules, which the caller must keep:
  the optimizer step and ``reset_states`` run outside the graph, ``zero_grad(set_to_none=False)`` so the gradients
  stay at the captured addresses; every per-step scalar (KD weight, loss weights, learning rate of a loss) must be a
  tensor input, not a Python float, or the captured value is replayed forever; returned tensors (loss, output) are
  static buffers overwritten by the next replay; no host synchronisation (``.item()``, data-dependent Python
  branches) inside the step; no neuron with ``store_v_seq``; autocast runs with ``cache_enabled=False``. Neuron state
  is safe: each forward after a reset materialises ``v`` inside the graph, so every replay starts from 0; tdBN
  running statistics are updated in place and replay correctly. Not combinable with ``compile`` (use
  ``compile: {mode: reduce-overhead}`` for compiler-managed graphs). Not run on a GPU yet.
"""
import contextlib
import dataclasses
import warnings

import torch
from spikingjelly.activation_based import functional
from spikingjelly.activation_based.neuron.base_node import BaseNode

from spikerir_plugin.utils.options import SPEED_BOOL_KEYS as BOOL_KEYS
from spikerir_plugin.utils.options import SPEED_COMPILE_KEYS as COMPILE_KEYS
from spikerir_plugin.utils.options import SPEED_KEYS

FUSED_LIF_IMPLEMENTATIONS = ('cuda', 'triton')  # 'torch' on CUDA is a per-step loop; CPU is 'torch-reference'
_LOW_PRECISION = (torch.bfloat16, torch.float16)
_HOOK_FLAG = '_spikerir_fp32_input_hook'


@dataclasses.dataclass(frozen=True)
class SpeedOptions:
    channels_last: bool = False
    bf16: bool = False
    compile: object = False  # bool or dict of torch.compile keyword arguments
    checkpoint: bool = False
    teacher_bf16: bool = False
    teacher_cuda_graph: bool = False
    cuda_graph: bool = False

    @classmethod
    def from_dict(cls, speed):
        """Validate the ``speed:`` section (None or {} = all off)."""
        if speed is None:
            return cls()
        if isinstance(speed, SpeedOptions):
            return speed
        if not isinstance(speed, dict):
            raise TypeError(f'speed must be a mapping with keys {list(SPEED_KEYS)}, got {type(speed).__name__}')
        unknown = sorted(set(speed) - set(SPEED_KEYS))
        if unknown:
            raise KeyError(f'speed: unknown key(s) {unknown}; valid keys: {list(SPEED_KEYS)}')
        speed = {k: v for k, v in speed.items() if v is not None}  # an empty YAML value means the default
        for key in BOOL_KEYS:
            if key in speed and not isinstance(speed[key], bool):
                raise TypeError(f'speed.{key} must be true or false, got {speed[key]!r}')
        compile_opt = speed.get('compile', False)
        if isinstance(compile_opt, dict):
            bad = sorted(set(compile_opt) - set(COMPILE_KEYS))
            if bad:
                raise KeyError(f'speed.compile: unknown key(s) {bad}; valid keys: {list(COMPILE_KEYS)}')
        elif not isinstance(compile_opt, bool):
            raise TypeError(f'speed.compile must be true, false or a mapping with keys {list(COMPILE_KEYS)}, '
                            f'got {compile_opt!r}')
        options = cls(**speed)
        if options.cuda_graph and options.compile_kwargs is not None:
            raise ValueError('speed.cuda_graph and speed.compile cannot be combined; for compiler-managed CUDA '
                             'graphs use speed.compile: {mode: reduce-overhead} and cuda_graph: false')
        return options

    @classmethod
    def from_opt(cls, opt):
        """From a full basicsr options dict (reads its ``speed`` key)."""
        return cls.from_dict((opt or {}).get('speed'))

    @property
    def compile_kwargs(self):
        """torch.compile keyword arguments, or None when compile is off."""
        if self.compile is False or self.compile is None:
            return None
        return {} if self.compile is True else dict(self.compile)

    def check_device(self, device):
        for key in ('cuda_graph', 'teacher_cuda_graph'):
            if getattr(self, key) and torch.device(device).type != 'cuda':
                raise RuntimeError(f'speed.{key} needs a CUDA device, got {torch.device(device)}; '
                                   f'set speed.{key}: false on this machine')


def as_speed_options(speed):
    """None | dict (the ``speed:`` section) | SpeedOptions -> SpeedOptions."""
    return SpeedOptions.from_dict(speed)


def _cast_input_to_fp32(module, args):
    if args and isinstance(args[0], torch.Tensor) and args[0].dtype in _LOW_PRECISION:
        return (args[0].float(),) + tuple(args[1:])
    return None


def keep_neuron_state_fp32(net):
    """Pre-hook every spikingjelly neuron in ``net`` so low-precision inputs reach it as fp32 (idempotent)."""
    count = 0
    for module in net.modules():
        if isinstance(module, BaseNode) and not getattr(module, _HOOK_FLAG, False):
            module.register_forward_pre_hook(_cast_input_to_fp32)
            setattr(module, _HOOK_FLAG, True)
            count += 1
    return count


def _conv2d_modules(net):
    return [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]


def prepare_model(net, speed=None, device=None):
    """Apply the model-side switches in place (channels_last weights, fp32 neuron inputs under bf16); returns net.

    Call on the bare network (not the DDP wrapper), after moving it to its device and before building the optimizer
    (parameters keep their identity, only their storage layout changes). ``device`` defaults to the parameters'."""
    speed = as_speed_options(speed)
    first = next(net.parameters(), None)
    if device is not None or first is not None:
        speed.check_device(device if device is not None else first.device)
    if speed.channels_last:
        for conv in _conv2d_modules(net):
            conv.weight.data = conv.weight.data.contiguous(memory_format=torch.channels_last)
    if speed.bf16:
        keep_neuron_state_fp32(net)
    for module in net.modules():
        if hasattr(module, 'activation_checkpoint'):
            module.activation_checkpoint = speed.checkpoint
    return net


def prepare_input(x, speed=None):
    """NHWC copy of a 4-D batch when channels_last is on, else x unchanged."""
    if as_speed_options(speed).channels_last and isinstance(x, torch.Tensor) and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def autocast_context(device, speed=None):
    """bf16 autocast for the device's type when speed.bf16, else a null context."""
    speed = as_speed_options(speed)
    if not speed.bf16:
        return contextlib.nullcontext()
    device_type = torch.device(device).type
    # the autocast weight-cast cache must not be captured in a CUDA graph (torch.cuda.graphs docs)
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16, cache_enabled=not speed.cuda_graph)


def teacher_autocast_context(device, speed=None):
    """bf16 autocast for the frozen teacher when speed.bf16 or speed.teacher_bf16, else a null context."""
    speed = as_speed_options(speed)
    if not (speed.bf16 or speed.teacher_bf16):
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16,
                          cache_enabled=not (speed.cuda_graph or speed.teacher_cuda_graph))


def maybe_compile(module, speed=None):
    """``module`` itself when compile is off, else a compiled function calling it (same parameters, same
    state_dict keys: save ``module``, never the returned callable)."""
    kwargs = as_speed_options(speed).compile_kwargs
    if kwargs is None:
        return module
    return torch.compile(module.__call__, **kwargs)


def cuda_graph_step(step_fn, device, speed=None, model=None, warmup_steps=3):
    """``step_fn`` when cuda_graph is off, else spikingjelly's StaticCudaGraph around it (see module docstring for
    the rules the step must follow). ``model``: checked for neurons storing v_seq."""
    speed = as_speed_options(speed)
    if not speed.cuda_graph:
        return step_fn
    speed.check_device(device)
    if not torch.cuda.is_available():
        raise RuntimeError('speed.cuda_graph needs a CUDA device, but torch.cuda.is_available() is False')
    from spikingjelly.activation_based._cuda_graph import StaticCudaGraph, validate_cuda_graph_model
    if model is not None:
        validate_cuda_graph_model(model)
    return StaticCudaGraph(step_fn, warmup_steps=warmup_steps)


def check_fused_lif(device, execution='eager'):
    """(implementation dict, fused?) of the LIF neurons' multi-step loop on ``device``. On CUDA: spikingjelly's
    neuron_implementation('lif', device) dict; fused means its native or Triton kernel (fp32 neuron state only). On
    the CPU: the plugin's fused loop (``ops/neuron_loops.py``, fused True) unless ``spikingjelly_loops()`` is
    active, then spikingjelly's per-step torch reference (fused False); spikingjelly's own choice is kept under the
    key ``spikingjelly``."""
    from spikerir_plugin.archs.neurons import fused_cpu_loops_active
    device = torch.device(device)
    try:
        info = dict(functional.neuron_implementation('lif', device, execution=execution))
    except RuntimeError as error:  # e.g. a CUDA device without any usable provider
        warnings.warn(f'spikingjelly could not select a LIF implementation on {device}: {error}')
        return {'implementation': 'unavailable', 'unavailable': {'error': str(error)}}, False
    if device.type == 'cpu' and fused_cpu_loops_active():
        return {'implementation': 'spikerir-cpu-loop', 'spikingjelly': info.get('implementation')}, True
    return info, device.type == 'cuda' and info.get('implementation') in FUSED_LIF_IMPLEMENTATIONS


class GraphedForward:
    """``fn(x)`` replayed from a CUDA graph, one graph per input shape, dtype and layout (at most ``max_graphs``;
    the oldest is dropped). For frozen, forward-only work (the distillation teacher): no autograd, no host
    synchronisation, no data-dependent Python branches inside ``fn``. The returned tensors are the graph's static
    outputs, overwritten by the next call with the same shape."""

    def __init__(self, fn, warmup_steps=2, max_graphs=4):
        self.fn, self.warmup_steps, self.max_graphs = fn, warmup_steps, max_graphs
        self.graphs = {}

    def __call__(self, x):
        key = (tuple(x.shape), x.dtype, x.stride(), x.device)
        entry = self.graphs.get(key)
        if entry is None:
            entry = self.graphs[key] = self._capture(x)
            while len(self.graphs) > self.max_graphs:
                self.graphs.pop(next(iter(self.graphs)))
        graph, static_in, static_out = entry
        static_in.copy_(x)
        graph.replay()
        return static_out

    def _capture(self, x):
        static_in = x.clone()
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side), torch.no_grad():  # warm-up: cuDNN autotuning, lazy allocations, kernels
            for _ in range(self.warmup_steps):
                self.fn(static_in)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.no_grad():
            static_out = self.fn(static_in)
        return graph, static_in, static_out
