"""Host allocator tuning: keep freed activation memory mapped between training steps (Linux).

glibc serves every allocation above its mmap threshold (at most 32 MiB on 64-bit) with a fresh `mmap` and
returns it to the kernel on `free`. A training step at the paper's 288x384 allocates and frees GBs of activations,
so every step the kernel hands the same memory back as new zeroed pages: at 288x384 that was a third of each
step's CPU time spent in the kernel (issue 13: 66-109 sys seconds a step, 25-30 M minor page faults).

Three remedies, chosen by measurement (benchmarks/RESULTS.md), the first one available wins:

1. **tcmalloc** (gperftools; Debian/Ubuntu `libtcmalloc-minimal4`, conda `gperftools`) when it is installed: `ser`
   restarts itself once with the library in `LD_PRELOAD` (an allocator cannot be swapped inside a running process;
   PyTorch's own CPU launcher `torch.backends.xeon.run_cpu` preloads it the same way). Its page heap keeps freed
   spans for reuse and places blocks by size class, so the step faults almost nothing *and* the resident set stays
   at the step's live size (at 288x384 with activation checkpointing: 0.10 % sys, 6.73 GB peak).
2. **mimalloc** from pip otherwise (`cmeel-mimalloc`, a dependency of ser on Linux x86-64 and aarch64, so the
   README's set-up installs it): the same restart, with `MIMALLOC_PURGE_DELAY=-1` so freed pages stay mapped for
   reuse as in tcmalloc's page heap. At 288x384 with checkpointing 74.4 s/step, 0.06 % sys, 7.53 GB peak against
   tcmalloc's 77.4 s and 6.73 GB: tcmalloc stays first for its lower peak (issue 33).
3. **glibc `mallopt`** where neither loads: `M_MMAP_MAX = 0` serves large blocks from the heap instead of private
   mappings, and `M_TRIM_THRESHOLD = -1` never gives the heap's free top back, so the second step reuses the first
   step's pages. No page-fault storm either, but glibc's heap fragments at large sizes: the resident set stays
   above the live size (at 288x384 15-18 GB against 9-12.5 without it).

jemalloc (5.3, default settings) was measured too and purges freed pages eagerly (28 % sys). Transparent huge pages
for torch's allocations only made faults fewer (14 -> 11 % sys). `--no-memory-tuning` leaves the allocator as it is;
`SER_ALLOCATOR=glibc` skips the restart alone, `SER_ALLOCATOR=tcmalloc` or `mimalloc` picks one of the two. The
numbers computed are unaffected (tested).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

# <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

# Where distributions and conda put gperftools' tcmalloc.
TCMALLOC_NAMES = ("tcmalloc_minimal", "tcmalloc")
TCMALLOC_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
                 "/usr/local/lib")
# mimalloc from pip (`cmeel-mimalloc` puts it under site-packages/cmeel.prefix/lib). A negative purge delay keeps
# freed pages mapped for reuse, as tcmalloc's page heap does (its default, 10 ms, gave pages back between steps).
MIMALLOC_ENV = {"MIMALLOC_PURGE_DELAY": "-1"}
# SER_ALLOCATOR: which library the restart preloads ("auto": the first of tcmalloc, mimalloc that is installed)
CHOICES = ("auto", "tcmalloc", "mimalloc", "glibc")
# Set in the restarted process: never restart twice, whatever the outcome of the first.
RESTARTED = "SER_ALLOCATOR_RESTARTED"


def find_tcmalloc() -> Path | None:
    """The shared tcmalloc library of this machine (the active conda environment's first), or None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    prefix = os.environ.get("CONDA_PREFIX")
    folders = [Path(prefix, "lib")] if prefix else []
    for name in TCMALLOC_NAMES:
        for folder in [*folders, *map(Path, TCMALLOC_DIRS)]:
            for suffix in (".so.4", ".so"):
                if (folder / f"lib{name}{suffix}").is_file():
                    return folder / f"lib{name}{suffix}"
    return None


def find_mimalloc() -> Path | None:
    """The shared mimalloc library a pip wheel (`cmeel-mimalloc`) installed beside this Python, or None."""
    import site
    import sysconfig

    folders = {Path(sysconfig.get_paths()["purelib"]), *map(Path, site.getsitepackages())}
    for folder in sorted(folders):
        for name in ("libmimalloc.so.3", "libmimalloc.so.2", "libmimalloc.so"):
            if (folder / "cmeel.prefix" / "lib" / name).is_file():
                return folder / "cmeel.prefix" / "lib" / name
    return None


def loaded_caching_allocator() -> str | None:
    """"tcmalloc" or "mimalloc" when this process runs on it (preloaded), else None."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    return "tcmalloc" if "libtcmalloc" in maps else "mimalloc" if "libmimalloc" in maps else None


def preload_environment(environ: Mapping[str, str], library: Path) -> dict[str, str]:
    """`environ` with `library` first in `LD_PRELOAD`, marked as restarted, and the library's own settings: tcmalloc's
    report of >1 GB blocks silenced (stderr belongs to ser's progress), mimalloc's freed pages kept (a user's own
    `MIMALLOC_PURGE_DELAY` wins)."""
    preload = " ".join(p for p in (str(library), environ.get("LD_PRELOAD", "")) if p)
    extra = ({"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(2**40)} if "tcmalloc" in library.name
             else {k: environ.get(k, v) for k, v in MIMALLOC_ENV.items()} if "mimalloc" in library.name else {})
    return {**environ, "LD_PRELOAD": preload, **extra, RESTARTED: "1"}


def allocator_choice(environ: Mapping[str, str]) -> str:
    """`SER_ALLOCATOR` of `environ` (one of CHOICES, "auto" when unset); ValueError names the value otherwise."""
    choice = environ.get("SER_ALLOCATOR", "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise ValueError(f"SER_ALLOCATOR={environ['SER_ALLOCATOR']!r}: expected one of {', '.join(CHOICES)}")
    return choice


def allocator_to_preload(environ: Mapping[str, str]) -> Path | None:
    """The library a process started with `environ` should restart on: by `SER_ALLOCATOR`, tcmalloc when installed,
    else mimalloc from pip; None when turned off (`glibc`), preloaded already (`LD_PRELOAD`, or a restart done) or
    not installed. An unknown `SER_ALLOCATOR` value also gives None: the CLI then says so in one line."""
    try:
        choice = allocator_choice(environ)
    except ValueError:
        return None
    preloaded = environ.get("LD_PRELOAD", "")
    if choice == "glibc" or environ.get(RESTARTED) or "libtcmalloc" in preloaded or "libmimalloc" in preloaded:
        return None
    if choice == "tcmalloc":
        return find_tcmalloc()
    if choice == "mimalloc":
        return find_mimalloc()
    return find_tcmalloc() or find_mimalloc()


def restart_on_fast_allocator(args: Sequence[str]) -> None:
    """Replace this process by the same command with tcmalloc or mimalloc preloaded (`allocator_to_preload`).

    Called first thing by the `ser` entry point (nothing imported yet, so the restart costs one interpreter start).
    Returns without restarting under `--no-memory-tuning`, `SER_ALLOCATOR=glibc`, after one restart, when a caching
    allocator is already loaded or none is installed, or when the command line of this process is not known.
    """
    if "--no-memory-tuning" in args or loaded_caching_allocator():
        return
    library = allocator_to_preload(os.environ)
    argv = getattr(sys, "orig_argv", None)
    if library is None or not argv or not sys.executable:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv[1:]], preload_environment(os.environ, library))


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


def tune_memory() -> str:
    """Apply the best available tuning in this process: "tcmalloc" or "mimalloc" (preloaded: nothing left to do),
    "glibc" (the mallopt pair) or "none"."""
    loaded = loaded_caching_allocator()
    if loaded:
        return loaded
    return "glibc" if keep_freed_memory_mapped() else "none"
