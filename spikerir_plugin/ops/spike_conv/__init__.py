"""Spike-driven convolutions for the fast CPU inference copy (``exact=False``): spikes packed into bits by the
neuron, convolutions as table look-ups (src/spike_conv.c explains the kernels).

Why our own kernel: oneDNN (PyTorch's CPU convolutions) has no binary-input convolution on x86, so a convolution
that reads spikes multiplies every weight by 0 or 1 and reads 32 bits per spike. Here a neuron layer whose output
only feeds convolutions writes 1 bit per spike, and each such convolution adds precomputed rows of summed weights
(one per 8 input channels and kernel tap) instead of multiplying: the accumulate-only arithmetic that the energy
report assumes for spike-driven layers. Measured in ``benchmarks/inference.py`` (``fast`` against ``fast-dense``),
``benchmarks/spike_conv.py`` (layer by layer) and benchmarks/README.md ("Inference").

The C file is compiled on first use with the system C compiler (``$CC``, else ``cc``; with OpenMP where it has
it, which then runs on PyTorch's own OpenMP threads) into the user's cache (``$XDG_CACHE_HOME/spikerir_plugin``,
else ``~/.cache/spikerir_plugin``; ``SPIKERIR_CACHE_DIR`` overrides), once per source, compiler and CPU, and
loaded with ctypes. Without a working compiler the fast copy keeps dense convolutions (one warning). The sums run
in another order than oneDNN's, so outputs differ from the dense ones by float rounding (and, through rounding, a
membrane potential at a threshold may fire in one and not the other).
"""
import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

SOURCE = Path(__file__).parent / 'src' / 'spike_conv.c'
FLAGS = ['-O3', '-march=native', '-fPIC', '-shared', '-std=gnu11']  # -march=native: the cache key holds the CPU
TABLE_BYTES_MAX = 320 * 1024  # per slice of output channels: larger tables leave the L2 cache and run slower
# than oneDNN (benchmarks/README.md)
SKEW = 16  # floats between the 256-row blocks of a table (see src/spike_conv.c)

_lock = threading.Lock()
_library = None  # the loaded kernels, False once building failed
_pool = None  # (size, executor): the Python threads of a build without OpenMP


class PackedSpikes:
    """Spikes of a multi-step [T, B, C, H, W] layer as bits: ``bits`` is [T * B, H + 2, W + 2, ceil(C / 8)]
    uint8 with a zero border (a convolution's zero padding). Only a convolution with a table reads it."""

    def __init__(self, bits, shape):
        self.bits, self.shape = bits, shape

    def unpack(self):
        """The spikes as a float [T, B, C, H, W] tensor (for tests and debugging)."""
        t, b, c, h, w = self.shape
        inner = self.bits[:, 1:h + 1, 1:w + 1]
        planes = (inner.unsqueeze(-1) >> torch.arange(8, dtype=torch.uint8)) & 1
        return planes.flatten(-2)[..., :c].float().permute(0, 3, 1, 2).unflatten(0, (t, b))


def _cache_dir():
    if os.environ.get('SPIKERIR_CACHE_DIR'):
        return Path(os.environ['SPIKERIR_CACHE_DIR'])
    return Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache') / 'spikerir_plugin'


def _cpu_identity():
    try:
        with open('/proc/cpuinfo') as f:
            return ''.join(line for line in f if line.startswith(('model name', 'flags')))[:4096]
    except OSError:
        return platform.processor()


def _compile(compiler, flags, target):
    """Compile SOURCE into target (atomically: concurrent builders each install a complete library)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(suffix='.so', dir=target.parent)
    os.close(fd)
    try:
        result = subprocess.run([*compiler, *flags, '-o', partial, str(SOURCE)], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f'{shlex.join(compiler)} failed on {SOURCE}: {result.stderr.strip()[-500:]}')
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def _load(target):
    library = ctypes.CDLL(str(target))
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    library.pack_spikes.argtypes = [ptr, *[i64] * 10, ptr, ctypes.c_float, i64, i64, i64, i64]
    library.pack_spikes.restype = None
    library.table_conv.argtypes = [ptr, i64, i64, i64, ptr, ptr, ptr, *[i64] * 10]
    library.table_conv.restype = ctypes.c_int
    library.spike_conv_threaded.restype = ctypes.c_int
    library.threaded = bool(library.spike_conv_threaded())
    return library


def _build():
    compiler = shlex.split(os.environ.get('CC', '')) or [shutil.which('cc') or shutil.which('gcc') or 'cc']
    key = hashlib.sha256(b'\0'.join([SOURCE.read_bytes(), ' '.join(compiler).encode(), ' '.join(FLAGS).encode(),
                                     _cpu_identity().encode(), platform.machine().encode()])).hexdigest()[:16]
    # with OpenMP where the compiler has it (the kernels then share PyTorch's OpenMP runtime where PyTorch uses
    # GNU OpenMP, as its Linux wheels do), else without; a failed variant is retried by the next process
    errors = []
    for variant, flags in (('omp', [*FLAGS, '-fopenmp']), ('serial', FLAGS)):
        target = _cache_dir() / f'spike_conv-{key}-{variant}.so'
        try:
            if not target.exists():
                _compile(compiler, flags, target)
            return _load(target)
        except (OSError, RuntimeError) as error:
            errors.append(error)
    raise RuntimeError(str(errors[-1]))


def kernels():
    """The compiled kernels (ctypes library), or None when they cannot be built here (warned once)."""
    global _library
    if _library is not None:  # built (or failed) already: no lock on the per-call path
        return _library or None
    with _lock:
        if _library is None:
            try:
                _library = _build()
            except (OSError, RuntimeError) as error:
                warnings.warn(f'spike-driven convolutions unavailable ({error}); the fast inference copy uses dense '
                              f'convolutions', RuntimeWarning, stacklevel=3)
                _library = False
        return _library or None


def packable(spec):
    """Whether pack_spikes runs this neuron (hard reset to 0; LIF tau 2 without input decay, or IF)."""
    return spec.v_reset == 0.0 and (spec.tau is None or (spec.tau == 2.0 and not spec.decay_input))


def _slice_width(in_channels, out_channels, kernel_size, max_bytes=TABLE_BYTES_MAX):
    """Output channels per table slice: all of them (padded to a multiple of 8, at most 64) where that table stays
    within max_bytes, else 16 or 8; None where even 8 would not."""
    groups, padded = -(-in_channels // 8), _padded(out_channels)
    for width in dict.fromkeys((min(padded, 64), 16, 8)):  # the kernels take up to 64 output channels a slice
        if width <= padded and kernel_size ** 2 * groups * (256 * width + SKEW) * 4 <= max_bytes:
            return width
    return None


def table_eligible(conv):
    """Whether a (frozen, folded) convolution can run on packed spikes, with tables that stay in cache."""
    k = conv.kernel_size[0]
    return (conv.weight.device.type == 'cpu' and conv.weight.dtype == torch.float32 and conv.groups == 1
            and conv.kernel_size in ((1, 1), (3, 3)) and conv.dilation == (1, 1) and conv.stride[0] == conv.stride[1]
            and conv.padding in ((0, 0), (1, 1)) and conv.padding[0] <= k // 2 and conv.padding_mode == 'zeros'
            and _slice_width(conv.in_channels, conv.out_channels, k) is not None)


def _padded(channels):
    return -(-channels // 8) * 8


class SpikeTable:
    """The tables of one convolution for table_conv: for every slice of (up to 64, 16 or 8) output channels, every
    tap and every group of 8 input channels, the 256 sums of the weights of the channels whose bit is set (summed in
    float64, then rounded once); output channels padded to a multiple of 8 with zero weights. ``max_bytes`` bounds
    a slice's table (the default keeps it in the L2 cache; benchmarks/spike_conv.py also times unsliced tables)."""

    def __init__(self, weight, bias, max_bytes=TABLE_BYTES_MAX):
        cout, cin, k, _ = weight.shape
        groups, padded = -(-cin // 8), _padded(cout)
        width = _slice_width(cin, cout, k, max_bytes)
        w = torch.zeros(padded, groups * 8, k, k, dtype=torch.float64)
        w[:cout, :cin] = weight.detach().double()
        codes = torch.arange(256)
        bits = ((codes[:, None] >> torch.arange(8)) & 1).double()  # [256, 8]
        tables, self.slices, offset = [], [], 0  # slices: (first channel, width, offset of its table in floats)
        for first in range(0, padded, width):
            size = min(width, padded - first)
            part = w[first:first + size].permute(2, 3, 1, 0).reshape(k * k * groups, 8, size)
            blocks = torch.zeros(k * k * groups, 256 * size + SKEW)
            blocks[:, :256 * size] = torch.einsum('rb,nbo->nro', bits, part).reshape(k * k * groups, -1).float()
            tables.append(blocks.flatten())
            self.slices.append((first, size, offset))
            offset += blocks.numel()
        self.table = torch.cat(tables)
        self.bias = torch.zeros(padded)
        if bias is not None:
            self.bias[:cout] = bias.detach().float()
        self.out_channels, self.kernel_size = cout, k


def _run_rows(function, args, rows):
    """function(*args, begin, end, threads) over rows on torch's intra-op thread count: split by the kernels'
    OpenMP, or here over Python threads when they were built without it (ctypes releases the GIL)."""
    global _pool
    threads = max(1, min(torch.get_num_threads(), rows // 8))
    if threads == 1 or kernels().threaded:
        return [function(*args, 0, rows, threads)]
    if _pool is None or _pool[0] < threads:  # one pool, replaced only when torch's thread count grows
        _pool = (torch.get_num_threads(), ThreadPoolExecutor(torch.get_num_threads(), 'spike_conv'))
    bounds = [rows * i // threads for i in range(threads + 1)]
    return list(_pool[1].map(lambda i: function(*args, bounds[i], bounds[i + 1], 1), range(threads)))


def pack_spikes(x, spec):
    """Run a packable neuron over a multi-step float32 CPU input x [T, B, C, H, W] (any strides) and return its
    spikes as PackedSpikes (the kernels must be available: ``kernels()`` is not None)."""
    t, b, c, h, w = x.shape
    bits = torch.zeros(t * b, h + 2, w + 2, -(-c // 8), dtype=torch.uint8)
    _run_rows(kernels().pack_spikes, (x.data_ptr(), *x.stride(), t, b, c, h, w, bits.data_ptr(), spec.v_threshold,
                                    int(spec.tau is not None)), b * h)
    return PackedSpikes(bits, (t, b, c, h, w))


def table_conv(packed, spike_table, stride, padding):
    """The convolution of packed spikes: [T, B, out_channels, Ho, Wo] float32, laid out channels-last per step."""
    t, b, c, h, w = packed.shape
    k, padded = spike_table.kernel_size, spike_table.bias.numel()
    ho, wo = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    out = torch.empty(t * b, ho, wo, padded)
    bits, table, bias = packed.bits, spike_table.table, spike_table.bias
    for first, width, offset in spike_table.slices:
        codes = _run_rows(kernels().table_conv, (
            bits.data_ptr(), bits.shape[1], bits.shape[2], bits.shape[3], table.data_ptr() + 4 * offset,
            bias.data_ptr() + 4 * first, out.data_ptr() + 4 * first, width, padded, k, stride, padding, ho, wo),
            t * b * ho)
        if any(code != 0 for code in codes):
            raise RuntimeError(f'table_conv cannot run {width} output channels with padding {padding}')
    if padded != spike_table.out_channels:  # padded output channels: a dense channels-last copy of the real ones
        out = out[..., :spike_table.out_channels].contiguous()
    return out.permute(0, 3, 1, 2).unflatten(0, (t, b))
