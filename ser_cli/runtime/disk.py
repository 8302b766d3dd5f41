"""Disk space an output needs, checked before writing it: HDF5 cannot fail cleanly on a full disk.

h5py buffers writes in its chunk and metadata caches; when the disk fills up, the failing writes surface only while
those caches are flushed or freed, as floods of "Exception ignored" messages and, on close, a crash (seen here:
`ser data synth` on a 200 KB tmpfs printed ~12,000 lines and died with SIGSEGV). So every HDF5 writer asks
`check_free_space` for the bytes it is about to add, and a run that cannot fit stops at once with one line.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ser_cli.runtime.errors import RunFailure

# Room left for HDF5's own metadata, the other outputs (JSON, PNG) and other writers on the same disk.
MARGIN_BYTES = 16 * 1024 * 1024


def check_free_space(path: Path, needed: int, what: str) -> None:
    """RunFailure (exit 1, one line) unless the file system holding `path` has `needed` bytes plus a margin free.

    Args:
        path: The file about to be written (its nearest existing parent folder is measured).
        needed: Bytes the write adds (an upper bound: uncompressed sizes).
        what: What is written, for the message (e.g. "the train split's images").
    """
    folder = Path(path).resolve().parent
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if free < needed + MARGIN_BYTES:
        raise RunFailure(f"{path}: {what} need {_size(needed + MARGIN_BYTES)} of disk space, {_size(free)} free in "
                         f"{folder}; free some space or write elsewhere")


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
