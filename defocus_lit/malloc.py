"""Keep freed memory in the process: glibc's malloc hands a large freed block (from 128 KiB up, a threshold it
raises only to 32 MiB) back to the kernel at once, so every training step's activations and gradients arrive in
fresh pages that the kernel must map and zero. On a 2-core CPU that was 45 % of a training run's wall-clock time,
most of it kernel time; with the blocks kept (PyTorch's CPU tuning guide suggests jemalloc or tcmalloc for the same
reason; glibc's own switches need no extra library) 60 steps of the CPU preset ran 1.8 times as fast and the main
job 1.4 times, with the same numbers. The cost: the process keeps its peak memory until it ends, which a training run
reaches in its first steps anyway (`predict`'s peak grew by a third; docs/benchmarks.md).
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt(3) parameters
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
LARGEST = 2**31 - 1  # mallopt takes an int: blocks up to 2 GiB come from (and return to) the heap
TOP_PAD = 1 << 30  # the heap grows 1 GiB (address space, not memory) at a time, not once per step


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed blocks (heap, not mmap; no trimming). Whether it did: False on another
    C library or system, and when the user set glibc's malloc switches in the environment (those win)."""
    if not sys.platform.startswith("linux") or "GLIBC_TUNABLES" in os.environ:
        return False
    if any(name.startswith("MALLOC_") and name.endswith("_") for name in os.environ):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False
    settings = ((M_MMAP_THRESHOLD, LARGEST), (M_TRIM_THRESHOLD, LARGEST), (M_TOP_PAD, TOP_PAD))
    return all(mallopt(param, value) == 1 for param, value in settings)
