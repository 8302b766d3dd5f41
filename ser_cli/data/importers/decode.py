"""Decoding one row of an import: read its image, map and fixation points, resize them to the store's size.

`decode_item` is what the worker processes run (`ser_cli.data.importers.parallel`); it is a plain module-level
function of picklable arguments. EXIF orientation is deliberately ignored: fixations are recorded on the stored
pixel grid, and a rotated image would no longer match them (CAT2000's `Pattern/134.jpg` is the known case;
saliency-datasets-and-metrics.md section 3.3). A file PIL cannot decode, or one past PIL's decompression-bomb
limit, becomes a one-line `UserError` naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

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
            return image.copy() if mode == "keep" else image.convert(mode)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        if isinstance(err, UnidentifiedImageError):
            reason = "not an image format PIL can read"  # its own message repeats the path
        else:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"{path}: unreadable or corrupt image ({reason})") from None


def decode_item(item: Item, size: tuple[int, int], read_points: PointsReader | None) -> Decoded:
    """Decode and resize the files of `item` to `size` = (H, W)."""
    image = open_image(item.image, "RGB")
    source = (image.height, image.width)
    grey = resize_map(open_image(item.map, "keep"), size) if item.map is not None else None
    points = read_points(item.points, source, size) if item.points is not None and read_points else None
    return Decoded(resize_image(image, size), grey, points)
