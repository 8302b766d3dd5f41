"""Atomic file writes: write to `NAME.partial`, then rename, so nobody ever reads a half-written output."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary name in the same directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{path}.partial")
    tmp.write_text(text)
    os.replace(tmp, path)


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
