"""Resizing to the store's size, as the SER paper does: LANCZOS to (H, W), aspect ratio ignored.

The authors resize images and saliency maps with PIL's LANCZOS to 288x384 whatever their shape (method.md
section 2); we do the same at `data.height` x `data.width`. Maps are resized in float so that no precision is
lost before they are rescaled to 255 at their maximum (the store's convention). Fixation points are rescaled
by their pixel centres, never by resizing a point map: nearest-resizing a point map drops or merges fixations
(saliency-datasets-and-metrics.md section 3.2).
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def resize_image(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """An RGB image resized to `size` = (H, W) with LANCZOS, as (H, W, 3) uint8."""
    height, width = size
    return np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS), dtype=np.uint8)


def resize_map(grey: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """A saliency map resized to `size` = (H, W) with LANCZOS in float, as (H, W) uint8 with 255 at its maximum.

    An all-zero map stays all zeros (readers treat it as uniform).
    """
    height, width = size
    if grey.mode not in ("L", "I", "I;16", "F"):
        grey = grey.convert("L")
    resized = np.asarray(grey.convert("F").resize((width, height), Image.Resampling.LANCZOS), dtype=np.float64)
    resized = np.clip(resized, 0, None)  # LANCZOS rings below zero next to sharp peaks
    peak = resized.max()
    if peak <= 0:
        return np.zeros((height, width), np.uint8)
    return np.round(resized * (255.0 / peak)).astype(np.uint8)


def scale_points(yx: np.ndarray, source: tuple[int, int], target: tuple[int, int]) -> np.ndarray:
    """0-based pixel coordinates (K, 2) as (y, x) on a `source` (H, W) grid -> (K, 2) int32 on the `target` grid.

    A pixel's centre p + 0.5 scales by target / source and lands in the target pixel that contains it, so the
    mapping agrees with how the image itself is resized (corner-aligned, as PIL does).
    """
    scale = np.asarray(target, np.float64) / np.asarray(source, np.float64)  # (2,)
    scaled = np.floor((np.asarray(yx, np.float64).reshape(-1, 2) + 0.5) * scale)  # (K, 2)
    return np.clip(scaled, 0, np.asarray(target) - 1).astype(np.int32)
