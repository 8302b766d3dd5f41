"""What every plot shares: an atomic PNG write."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from ser_cli.runtime.atomic import atomic_path


def save_png(fig: Figure, path: Path) -> Path:
    """Render `fig` to `path` through a temporary name, so a reader never sees half a PNG."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)
