"""The `predictions.png` grid of `ser pretrain-saliency`: image, ground-truth map and predicted map per row.

The layout of the qualitative figures in saliency papers (UNISAL, Droste et al., ECCV 2020; SER, Bellitto et al.,
NeurIPS 2024): one row per image, maps shown with a shared colour map, each scaled to its own maximum so that the
shape, not the absolute density, is compared. Uses `matplotlib.figure.Figure` directly (no pyplot state, no GUI
backend) and writes through a temporary name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ser_cli.plots.common import save_png

COLUMNS = ("image", "ground truth", "prediction")


def plot_saliency_grid(path: Path, images: np.ndarray, targets: np.ndarray, preds: np.ndarray,
                       scores: list[float] | None = None) -> Path:
    """Write the grid to `path` (PNG) and return it.

    Args:
        path: Output file.
        images: uint8 (N, H, W, 3).
        targets: Ground-truth maps (N, H, W), any non-negative scale.
        preds: Predicted maps (N, H, W), any non-negative scale.
        scores: Optional per-image CC, shown in the prediction's title.
    """
    n = len(images)
    h, w = images.shape[1:3]
    fig = Figure(figsize=(3 * 2.2 * w / max(h, w) + 0.4, n * 2.2 * h / max(h, w) + 0.6), dpi=100)
    axes = fig.subplots(n, 3, squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(images[i])
        axes[i, 1].imshow(unit_scaled(targets[i]), cmap="inferno", vmin=0, vmax=1)
        axes[i, 2].imshow(unit_scaled(preds[i]), cmap="inferno", vmin=0, vmax=1)
        if scores is not None:
            axes[i, 2].set_title(f"CC {scores[i]:.2f}", fontsize=8)
    for j, name in enumerate(COLUMNS):
        axes[0, j].set_title(name if scores is None or j < 2 else f"{name}\n{axes[0, j].get_title()}", fontsize=9)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.tight_layout()
    return save_png(fig, Path(path))


def unit_scaled(m: np.ndarray) -> np.ndarray:
    """A map scaled to [0, 1] by its maximum (a zero map stays zero)."""
    top = float(m.max())
    return m / top if top > 0 else m
