"""Reading a torch file a user named: the one `torch.load` of ser, with one set of one-line errors.

Every file ser reads with `torch.load` (models, weights, checkpoints) is read with `weights_only=True`, so a crafted
pickle never runs code, and every way it can fail is the same user mistake: the path names nothing, names a folder,
device or FIFO (which `torch.load` would block on), or names a file that does not load. `source` starts each
message: the path itself, or the option and the path (`--init-from PATH`), so the user sees where it came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ser_cli.runtime.errors import UserError


def read_torch_file(path: Path | str, source: str | None = None, *, what: str = "torch checkpoint",
                    missing: str = "file not found", device: torch.device | str = "cpu", mmap: bool = False) -> Any:
    """`torch.load(path, weights_only=True)` on `device`.

    Args:
        source: Names the file in messages (default: the path).
        what: What a readable file would have been (`not a readable {what}`).
        missing: The message for a path that names nothing (with a hint where the file comes from).
        mmap: Memory-map the file instead of reading it (for a peek at its metadata beside a loaded copy).

    Raises:
        UserError: one line: `{source}: {missing}`, `{source}: not a regular file (...)` or
            `{source}: not a readable {what} (ErrorType)`.
    """
    path = Path(path)
    source = str(path) if source is None else source
    if path.exists() and not path.is_file():  # never open a FIFO or device: torch.load would block on it
        raise UserError(f"{source}: not a regular file (a folder, device, FIFO or socket)")
    if not path.is_file():
        raise UserError(f"{source}: {missing}")
    try:
        return torch.load(path, map_location=device, weights_only=True, mmap=mmap)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user mistake
        raise UserError(f"{source}: not a readable {what} ({type(err).__name__})") from None
