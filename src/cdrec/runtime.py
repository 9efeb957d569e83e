"""Process-wide runtime settings of a run: thread counts, and the memory allocator; and the
process's peak memory, which the benchmarks print.

``set_threads`` applies a config's ``threads``/``interop_threads``. ``keep_freed_memory``
keeps freed tensor memory in the process instead of handing it back to the kernel: glibc's
malloc serves large blocks (above a threshold that adapts up to 32 MiB) with ``mmap``, returns
them with ``munmap``, and trims the heap top back to the kernel once 128 KiB are free.
Training allocates and frees the same batch-sized tensors at every step, so by default each
step pays page faults and zeroing for memory it just gave away: on the TMCDR Douban config that
was a fifth of the CPU time, all of it in the kernel (``sys``), with one thread as with two.
Raising the thresholds keeps that memory for reuse; peak memory is unchanged (the blocks are
the same), the resident set just does not shrink between steps.

Linux with glibc only; elsewhere the allocator is left as it is (results are the same either
way, only time differs).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
import sys

import torch

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's upper bound on 64-bit systems
_KEEP = 1 << 30

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's mmap threshold to its maximum and trim only above 1 GiB free; once per
    process. Returns whether the settings took effect (False off glibc)."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    _applied = all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX), (_M_TRIM_THRESHOLD, _KEEP),
        (_M_TOP_PAD, 64 * 1024 * 1024)))
    return _applied


def set_threads(intra_op: int | None, inter_op: int | None) -> None:
    """Apply a run's intra-op and inter-op thread counts (``None`` leaves torch's choice)."""
    if intra_op is not None:
        torch.set_num_threads(intra_op)
    if inter_op is not None and inter_op != torch.get_num_interop_threads():
        torch.set_num_interop_threads(inter_op)


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
