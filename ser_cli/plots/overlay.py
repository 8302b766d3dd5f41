"""A saliency map drawn over its image as a colour heat map (the usual qualitative figure of saliency papers).

Each pixel blends the image with the colour map's colour of its saliency, with an opacity that grows with the
saliency (at most `MAX_ALPHA` at the map's maximum), so non-salient regions keep the image as it is.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps

COLORMAP = "magma"  # perceptual, dark to bright: the map reads the same in grey and on saturated images
MAX_ALPHA = 0.6


def heat_overlay(image: np.ndarray, grey: np.ndarray) -> np.ndarray:
    """uint8 image (H, W, 3) and uint8 map (H, W), 255 at its maximum -> uint8 overlay (H, W, 3)."""
    level = grey.astype(np.float32) / 255.0  # (H, W) in [0, 1]
    heat = colormaps[COLORMAP](level)[..., :3] * 255.0  # (H, W, 3)
    alpha = MAX_ALPHA * level[..., None]  # (H, W, 1)
    blended = image.astype(np.float32) * (1.0 - alpha) + heat * alpha
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)
