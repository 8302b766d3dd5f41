"""Atomic file writes: write to a temporary name, then rename, so nobody ever reads a half-written output.

`atomic_path` is the one mechanism (text, JSON, PNG and torch checkpoints all go through it): it yields the temporary
path, renames it over the destination when the block succeeds (POSIX `rename` is atomic), optionally fsyncs first
(checkpoints: a crash right after must leave a complete file), and removes the temporary file when the block fails.

The temporary file is `NAME.partial` inside a folder `NAME.<pid>-<random>.partial/` that this call creates
(mkdir is exclusive): unique to this process, so two writers never share it and a user's own `NAME.partial` is never
overwritten or deleted. The file itself keeps the name `NAME.partial` because `torch.save` records the file's stem
inside the archive: the same state gives the same bytes (and sha256) as before. `remove_stale_temporaries` clears
the folders a killed process (`kill -9`) left, recognised by that pattern and a pid no longer running.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: Path, fsync: bool = False) -> Iterator[Path]:
    """Yield a new temporary file beside `path` (see the module docstring); on success rename it over `path`, on
    failure remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_temporary(path)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def unique_temporary(path: Path) -> Path:
    """`NAME.partial` in a new folder `NAME.<pid>-<random>.partial/` beside `path` (see the module docstring)."""
    while True:
        folder = Path(f"{path}.{os.getpid()}-{secrets.token_hex(6)}.partial")
        try:
            folder.mkdir()
            return folder / f"{Path(path).name}.partial"
        except FileExistsError:
            continue


def remove_stale_temporaries(path: Path) -> None:
    """Delete the temporary files of `path` (`unique_temporary`) whose process is gone (killed mid-write)."""
    pattern = re.compile(rf"{re.escape(Path(path).name)}\.(\d+)-[0-9a-f]{{12}}\.partial")
    for tmp in Path(path).parent.glob(f"{glob.escape(Path(path).name)}.*.partial"):
        match = pattern.fullmatch(tmp.name)
        if match and tmp.is_dir() and not _running(int(match.group(1))):
            shutil.rmtree(tmp, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary name in the same directory."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: Path, data: Any) -> None:
    """JSON with sorted keys and a trailing newline (stable for DVC and diffs); NaN written as null."""
    write_text_atomic(path, json.dumps(_nan_to_none(data), indent=2, sort_keys=True) + "\n")


def _nan_to_none(data: Any) -> Any:
    if isinstance(data, float) and data != data:
        return None
    if isinstance(data, dict):
        return {k: _nan_to_none(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_nan_to_none(v) for v in data]
    return data
