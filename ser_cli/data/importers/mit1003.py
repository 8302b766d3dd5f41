"""`mit1003`: the MIT1003 eye-tracking dataset (Judd et al., ICCV 2009), read from its image files only.

Layout: `ROOT/ALLSTIMULI/<stem>.jpeg` (also nested `ALLSTIMULI/ALLSTIMULI/`, as the archive unzips), with
`ROOT/ALLFIXATIONMAPS/<stem>_fixMap.jpg` (continuous map) and `<stem>_fixPts.jpg` (fixation points as a
JPEG-compressed binary image). The points are the pixels above 127 after decoding (JPEG smears a point's
neighbours, never past half its value), rescaled to the store's size by their pixel centres rather than by
nearest-resizing the point map, which would drop or merge fixations (saliency-datasets-and-metrics.md section
3.2). The point maps do not say which observer made a fixation: every point gets observer 0. MIT1003 has no
official split: a fraction `--test-fraction` (default 0.1) of the images, drawn with `--seed`, is the test split;
the same images, fraction and seed always give the same split. No classes: label 0, class `mit1003`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ser_cli.data.importers.base import Importer, ImportOptions, ImportPlan, Item, register_importer
from ser_cli.data.importers.decode import open_image
from ser_cli.data.importers.folders import list_files, matched_maps, require_dir
from ser_cli.data.importers.resize import scale_points
from ser_cli.runtime.errors import UserError

LAYOUT = "ROOT/ALLSTIMULI/*.jpeg with ROOT/ALLFIXATIONMAPS/<stem>_fixMap.jpg and <stem>_fixPts.jpg"
DEFAULT_TEST_FRACTION = 0.1
POINT_THRESHOLD = 127
CLASS_NAME = "mit1003"


@register_importer("mit1003")
class Mit1003Importer(Importer):
    """MIT1003 stimuli with continuous maps and thresholded point maps, split by seed."""

    def scan(self, src: Path, options: ImportOptions) -> ImportPlan:
        """See the module docstring."""
        if options.class_order is not None:
            raise UserError(f"--class-order: MIT1003 has no classes (every image is class {CLASS_NAME!r})")
        fraction = DEFAULT_TEST_FRACTION if options.test_fraction is None else options.test_fraction
        if not 0 < fraction < 1:
            raise UserError(f"--test-fraction: must be between 0 and 1, exclusive (got {fraction})")
        items = _items(src)
        test_rows = split_test_rows(len(items), fraction, options.seed)
        train_rows = np.setdiff1d(np.arange(len(items)), test_rows)
        limit = options.limit_per_class
        splits = {"train": [items[i] for i in train_rows][:limit], "test": [items[i] for i in test_rows][:limit]}
        details = {"test_fraction": fraction, "split_seed": options.seed, "point_threshold": POINT_THRESHOLD,
                   "limit_per_class": limit}
        return ImportPlan([CLASS_NAME], splits, read_points=read_mit1003_points, details=details)


def _items(src: Path) -> list[Item]:
    stimuli = require_dir(src / "ALLSTIMULI", LAYOUT)
    if (stimuli / "ALLSTIMULI").is_dir():
        stimuli = stimuli / "ALLSTIMULI"
    images = list_files(stimuli, (".jpeg", ".jpg"))
    if len(images) < 2:
        raise UserError(f"{stimuli}: found {len(images)} .jpeg images; need at least 2 to make a train/test split")
    maps_dir = require_dir(src / "ALLFIXATIONMAPS", LAYOUT)
    maps = matched_maps(images, maps_dir, ".jpg", "{stem}_fixMap")
    points = matched_maps(images, maps_dir, ".jpg", "{stem}_fixPts", kind="point map")
    return [Item(i, 0, m, p) for i, m, p in zip(images, maps, points, strict=True)]


def split_test_rows(n: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices (into the name-sorted images) of the test split: round(n * fraction), at least 1 and n - 1."""
    n_test = min(n - 1, max(1, round(n * fraction)))
    return np.sort(np.random.default_rng(seed).permutation(n)[:n_test])


def read_mit1003_points(path: Path, source: tuple[int, int], target: tuple[int, int]) -> np.ndarray:
    """Fixations of a `_fixPts.jpg` point map as (K, 3) int32 (observer 0, y, x) on the `target` grid.

    Args:
        source: The image's (H, W); unused, the point map's own size is the grid of its points.
    """
    points = np.asarray(open_image(path, "L"))  # (h, w) uint8
    yx = np.argwhere(points > POINT_THRESHOLD)  # (K, 2), 0-based, row-major order
    scaled = scale_points(yx, points.shape, target)
    return np.column_stack([np.zeros(len(scaled), np.int32), scaled]).astype(np.int32)
