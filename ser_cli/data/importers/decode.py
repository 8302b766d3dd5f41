"""Decoding one row of an import: read its image, map and fixation points, resize them to the store's size.

`decode_item` is what the worker processes run (`ser_cli.data.importers.parallel`); it is a plain module-level
function of picklable arguments. EXIF orientation is ignored for rows with maps or fixations: those are recorded on
the stored pixel grid, and a rotated image would no longer match them (CAT2000's `Pattern/134.jpg` is the known case;
saliency-datasets-and-metrics.md section 3.3); an image alone (an image folder) is turned upright as people see it.
16-bit greyscale images and maps are scaled to 8 bits (65535 -> 255) rather than clipped to white by PIL's mode
conversion. A file PIL cannot decode, or one past PIL's decompression-bomb limit, becomes a one-line `UserError`
naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ser_cli.data.importers.base import Item, PointsReader
from ser_cli.data.importers.resize import resize_image, resize_map
from ser_cli.runtime.errors import UserError


@dataclass(frozen=True)
class Decoded:
    """One row ready for the writer."""

    image: np.ndarray  # (H, W, 3) uint8
    map: np.ndarray | None  # (H, W) uint8, 255 at the maximum
    points: np.ndarray | None  # (K, 3) int32 (observer, y, x) on the (H, W) grid


def open_image(path: Path, mode: str) -> Image.Image:
    """Fully decode `path` into PIL `mode` ("RGB", "L", or "keep" for the file's own mode).

    Raises:
        UserError: missing, unreadable, truncated or not an image.
    """
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here, not later in a resize
            image = to_8_bits(image)
            return image.copy() if mode == "keep" else image.convert(mode)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        if isinstance(err, UnidentifiedImageError):
            reason = "not an image format PIL can read"  # its own message repeats the path
        else:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"{path}: unreadable or corrupt image ({reason})") from None


def to_8_bits(image: Image.Image) -> Image.Image:
    """A 16-bit (`I;16*`) or 32-bit integer (`I`) greyscale image as 8-bit `L`, scaled by the mode's full range;
    any other image unchanged. PIL's own conversion clips every value above 255 to white."""
    if not image.mode.startswith("I"):
        return image
    full = 65535.0 if image.mode.startswith("I;16") or np.asarray(image).max(initial=0) <= 65535 else 2.0**31 - 1
    grey = np.asarray(image, dtype=np.float64)  # (H, W)
    return Image.fromarray(np.clip(np.rint(grey / full * 255.0), 0, 255).astype(np.uint8), "L")


def decode_item(item: Item, size: tuple[int, int], read_points: PointsReader | None) -> Decoded:
    """Decode and resize the files of `item` to `size` = (H, W)."""
    image = open_image(item.image, "RGB")
    if item.map is None and item.points is None:  # nothing recorded on its pixel grid: turn it upright
        image = ImageOps.exif_transpose(image)
    source = (image.height, image.width)
    grey = resize_map(open_image(item.map, "keep"), size) if item.map is not None else None
    points = read_points(item.points, source, size) if item.points is not None and read_points else None
    return Decoded(resize_image(image, size), grey, points)
