"""What every plot shares: an atomic PNG write."""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.figure import Figure


def save_png(fig: Figure, path: Path) -> Path:
    """Render `fig` to `path` through a temporary name, so a reader never sees half a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{path}.partial")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path
