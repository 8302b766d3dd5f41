"""Atomic file writes: write to a temporary name, then rename, so nobody ever reads a half-written output.

`atomic_path` is the one mechanism (text, JSON, PNG and torch checkpoints all go through it): it yields the temporary
path, renames it over the destination when the block succeeds (POSIX `rename` is atomic), optionally fsyncs first
(checkpoints: a crash right after must leave a complete file), and removes the temporary file when the block fails.

The temporary name is `NAME.<pid>-<random>.partial`, created exclusively (O_EXCL): unique to this process, so two
writers never share it and a user's own `NAME.partial` is never overwritten or deleted. `remove_stale_temporaries`
clears the ones a killed process (`kill -9`) left, recognised by that pattern and a pid no longer running.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import secrets
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
        tmp.unlink(missing_ok=True)


def unique_temporary(path: Path) -> Path:
    """Create and return an empty `NAME.<pid>-<random>.partial` beside `path` that no other file had."""
    while True:
        tmp = Path(f"{path}.{os.getpid()}-{secrets.token_hex(6)}.partial")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            return tmp
        except FileExistsError:
            continue


def remove_stale_temporaries(path: Path) -> None:
    """Delete the temporary files of `path` (`unique_temporary`) whose process is gone (killed mid-write)."""
    pattern = re.compile(rf"{re.escape(Path(path).name)}\.(\d+)-[0-9a-f]{{12}}\.partial")
    for tmp in Path(path).parent.glob(f"{glob.escape(Path(path).name)}.*.partial"):
        match = pattern.fullmatch(tmp.name)
        if match and not _running(int(match.group(1))):
            tmp.unlink(missing_ok=True)


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
