"""Reading the JSON files of run and evaluation folders: one line for any file that is not the object ser wrote.

A run folder's `run.json` and `accuracy_matrix.json`, an evaluation folder's `run.json` and `metrics.json` are read
through `read_json_object`: a file that is not regular (a FIFO would block the read), not UTF-8, not JSON, or whose
top level is not a JSON object is a one-line `UserError` naming the file, never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ser_cli.runtime.errors import UserError

MAX_BYTES = 64 << 20  # far above any JSON ser writes; a larger file is not one of them


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in `path`.

    Raises:
        UserError: the file is missing, not a regular file, too large, not UTF-8 JSON, or not an object.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {'not a regular file' if path.exists() else 'missing'}")
    if path.stat().st_size > MAX_BYTES:
        raise UserError(f"{path}: larger than {MAX_BYTES >> 20} MiB; not a file written by ser")
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; not a file written by ser") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except RecursionError:
        raise UserError(f"{path}: nested too deeply; not a file written by ser") from None
    if not isinstance(value, dict):
        raise UserError(f"{path}: must hold a JSON object, not a {type(value).__name__}")
    return value
