"""Host allocator tuning: keep freed activation memory mapped between training steps (glibc on Linux).

glibc serves every allocation above its mmap threshold (at most 32 MiB on 64-bit) with a fresh `mmap` and
returns it to the kernel on `free`. A training step at the paper's 288x384 allocates and frees GBs of activations,
so every step the kernel hands the same memory back as new zeroed pages: at 288x384 that was a third of each
step's CPU time spent in the kernel (issue 13: 66-109 sys seconds a step, 25-30 M minor page faults). Two
`mallopt` settings stop it: `M_MMAP_MAX = 0` serves large blocks from the heap instead of private mappings, and
`M_TRIM_THRESHOLD = -1` never gives the heap's free top back, so the second step reuses the first step's pages.
Chosen by measurement (benchmarks/RESULTS.md) over transparent huge pages for torch's allocations
(`THP_MEM_ALLOC_ENABLE=1`: fewer but still recurring faults) and a preloaded jemalloc/tcmalloc (not installable
from Python, needs the process to be restarted). The cost: the resident set stays at its peak until the process
ends, which a training or evaluation process reaches anyway. The numbers computed are unaffected (tested).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def keep_freed_memory_mapped() -> bool:
    """Tell glibc's malloc to keep freed memory mapped for reuse (see the module docstring).

    Returns:
        True when both settings were applied; False off Linux, with another C library (musl, macOS) or when
        glibc refused a setting; the process then runs with the default allocator behaviour.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # only glibc has it (and these mallopt parameters)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; -1 for the trim threshold is mallopt(3)'s documented "never trim".
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, -1) == 1
