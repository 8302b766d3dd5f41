"""`gradcam.png` of `ser evaluate`: where the classifier looks next to where people look, one row per image.

Columns: the test image (its class), the run's Grad-CAM (Selvaraju et al., ICCV 2017) with the image's scores in
the title, and the target saliency map; the maps are drawn as in `predictions.png` (`ser_cli.plots.saliency_grid`:
one colour map, each scaled to its own maximum), a heat overlay would be lost in SynthSal's busy colours. When the
data file has object masks, the object's outline is drawn on the image and on both maps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ser_cli.plots.common import save_png
from ser_cli.plots.saliency_grid import unit_scaled

COLUMNS = ("image", "Grad-CAM (this run)", "target saliency map")
CMAP = "inferno"
OUTLINE = "cyan"


def plot_gradcam(path: Path, images: np.ndarray, cams: np.ndarray, titles: list[str],
                 targets: np.ndarray | None = None, masks: np.ndarray | None = None,
                 scores: list[str] | None = None) -> Path:
    """Write the grid to `path` (PNG) and return it.

    Args:
        path: Output file.
        images: uint8 (N, H, W, 3).
        cams: Grad-CAM maps (N, H, W), non-negative, any scale.
        titles: One caption per image (its class).
        targets: Target saliency maps (N, H, W), or None (the column says so).
        masks: Bool object masks (N, H, W) outlined on the Grad-CAM, or None.
        scores: One caption per Grad-CAM (e.g. "on object 0.41  CC 0.33"), or None.
    """
    n, (h, w) = len(images), images.shape[1:3]
    fig = Figure(figsize=(3 * 2.0 * w / max(h, w) + 0.4, n * 2.0 * h / max(h, w) + 0.6), dpi=110)
    axes = fig.subplots(n, 3, squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(images[i])
        axes[i, 0].set_title(titles[i], fontsize=7)
        axes[i, 1].imshow(unit_scaled(cams[i]), cmap=CMAP, vmin=0, vmax=1)
        if scores is not None:
            axes[i, 1].set_title(scores[i], fontsize=7)
        if targets is not None:
            axes[i, 2].imshow(unit_scaled(targets[i]), cmap=CMAP, vmin=0, vmax=1)
        if masks is not None:
            for ax in axes[i]:
                ax.contour(masks[i].astype(float), levels=[0.5], colors=OUTLINE, linewidths=0.8)
    if targets is None:
        axes[0, 2].text(0.5, 0.5, "no target maps", ha="center", va="center", fontsize=8)
    for j, name in enumerate(COLUMNS):
        axes[0, j].set_title(f"{name}\n{axes[0, j].get_title()}".strip(), fontsize=8)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.tight_layout()
    return save_png(fig, Path(path))
