"""One GPU per process among several jobs on one machine (`--device cuda:auto`), for sweeps run by DVC's queue.

`dvc queue start --jobs N` runs N experiments at once, each a plain `ser` process that knows nothing of the others.
With `--device cuda:auto` (or `SER_DEVICE=cuda:auto` in the queue's environment) each process claims the first GPU
no other `ser` process holds, by taking an exclusive `flock` on `LOCK_DIR/cuda<i>.lock`, and keeps it until it
exits. The kernel drops the lock when the process ends, however it ends (kill -9 included), so a slot is never
left taken by a dead job. When every GPU is taken, the process waits for one to free up: more jobs than GPUs
queue on the GPUs instead of sharing one. Locks are per machine (the default folder is in the system's temporary
folder; `SER_GPU_LOCK_DIR` moves it, e.g. for several users sharing GPUs through a common folder).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

_held: list[IO[bytes]] = []  # the claimed slot's open lock file: closing it (at exit) releases the slot


def lock_dir() -> Path:
    """Where the slot locks live: `SER_GPU_LOCK_DIR`, else `<tmp>/ser-gpu-slots`."""
    return Path(os.environ.get("SER_GPU_LOCK_DIR") or Path(tempfile.gettempdir()) / "ser-gpu-slots")


def try_claim(n_slots: int, folder: Path) -> int | None:
    """Claim the first free slot of `n_slots` for the rest of this process; None when all are held elsewhere."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(n_slots):
        handle = open(folder / f"cuda{index}.lock", "ab")  # noqa: SIM115 - held open for the process's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _held.append(handle)
        return index
    return None


def claim_slot(n_slots: int, folder: Path | None = None, poll_seconds: float = 2.0,
               on_wait: Callable[[int], None] | None = None) -> int:
    """The index of a slot this process now holds, waiting while all `n_slots` are held by other processes.

    Args:
        n_slots: How many slots there are (the GPUs of the machine).
        folder: Where the locks live (default `lock_dir()`).
        poll_seconds: How often to look again while waiting.
        on_wait: Called once with `n_slots` before the first wait (to say why the process is waiting).
    """
    folder = folder or lock_dir()
    if _held:  # a second call in one process keeps its slot
        return int(Path(_held[0].name).stem.removeprefix("cuda"))
    told = False
    while (index := try_claim(n_slots, folder)) is None:
        if on_wait is not None and not told:
            on_wait(n_slots)
            told = True
        time.sleep(poll_seconds)
    return index
