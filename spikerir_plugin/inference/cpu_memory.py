"""Keep freed CPU memory in the process for reuse: a large share of a CPU forward is otherwise page faults.

With glibc's default malloc settings much of what a forward frees goes back to the operating system (blocks above
malloc's mmap threshold, which adapts from 128 KiB up to 32 MiB, are unmapped; the heap shrinks once enough is
free at its top), so the next forward maps that memory again and the kernel zeroes every fresh page. Measured on a
2-core VM, the system time of one 512x512 forward (1 thread) was 41% of NAFNet-width32's wall time and 30-47% of
the spiking students' (``sys`` in ``benchmarks/inference.py``, which has ``--keep-freed-memory``). A spiking
network allocates T times more activation memory than an ANN of its width, so it pays more.

``keep_freed_memory()`` tells glibc's malloc to keep what is freed (no unmapping below 1 GiB, no heap trimming), so
after the first forward or two no page is mapped again. It changes how the whole process allocates, and the resident
memory stays at its peak until the process ends, so only the plugin's own inference commands call it
(``spikerir-restore`` and ``spikerir-energy``, on the CPU); a BasicSR run is left as it is. Call it in your own
inference process at its start. (glibc's ``MALLOC_*`` environment variables with the same values did not stop the
faults as reliably in our measurements.) Without glibc (macOS, Windows, musl) it does nothing and returns False.
"""
import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
_KEEP = 1 << 30  # 1 GiB: the largest block size still taken from the heap (mallopt takes an int)
_TRIM = (1 << 31) - 1  # free memory at the heap's top kept up to 2 GiB


def keep_freed_memory():
    """Ask glibc's malloc to keep freed memory for reuse; True if it took both settings (see the module docstring)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # glibc only: other C libraries' mallopt has other parameter numbers
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _KEEP)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM))
