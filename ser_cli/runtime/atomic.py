"""Atomic file writes: write to `NAME.partial`, then rename, so nobody ever reads a half-written output.

`atomic_path` is the one mechanism (text, JSON, PNG and torch checkpoints all go through it): it yields the temporary
path, renames it over the destination when the block succeeds (POSIX `rename` is atomic), optionally fsyncs first
(checkpoints: a crash right after must leave a complete file), and removes the temporary file when the block fails.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: Path, fsync: bool = False) -> Iterator[Path]:
    """Yield `NAME.partial` in `path`'s folder (created); on success rename it over `path`, on failure remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{path}.partial")
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
