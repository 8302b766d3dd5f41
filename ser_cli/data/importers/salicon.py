"""`salicon`: the SALICON saliency dataset (Jiang et al., CVPR 2015), as the official archives unpack.

Layout: `ROOT/images/{train,val}/COCO_*.jpg`, `ROOT/maps/{train,val}/COCO_*.png` (continuous maps) and
`ROOT/fixations/{train,val}/COCO_*.mat`; flat `images/`, `maps/`, `fixations/` folders whose files are told apart
by their `COCO_{train,val}2014_` prefix (UNISAL's layout) are read too. `val` becomes the test split (the official
test set has no public ground truth). Each `.mat` holds `resolution` = [H W] and `gaze`, a struct array with one
entry per observer whose `fixations` field is M x 2 [x y], 1-based (saliency-datasets-and-metrics.md section 3.1);
points are rescaled to the store's size and stored 0-based per observer; points outside the image are dropped.
SALICON has no classes: every image gets label 0 of the single class `salicon`. The 2015 and 2017 editions share
this layout and the files do not say which one they are; the provenance records the source folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ser_cli.data.importers.base import Importer, ImportOptions, ImportPlan, Item, register_importer
from ser_cli.data.importers.folders import list_files, matched_maps, require_dir
from ser_cli.data.importers.resize import scale_points
from ser_cli.runtime.errors import UserError

LAYOUT = "ROOT/images/{train,val}/*.jpg with ROOT/maps/{train,val}/*.png and ROOT/fixations/{train,val}/*.mat"
SPLIT_FOLDERS = {"train": "train", "test": "val"}
CLASS_NAME = "salicon"


@register_importer("salicon")
class SaliconImporter(Importer):
    """SALICON images with continuous maps and per-observer fixations."""

    def scan(self, src: Path, options: ImportOptions) -> ImportPlan:
        """See the module docstring."""
        if options.class_order is not None:
            raise UserError(f"--class-order: SALICON has no classes (every image is class {CLASS_NAME!r})")
        if options.test_fraction is not None:
            raise UserError("--test-fraction: SALICON's test split is its val folder")
        require_dir(src / "images", LAYOUT)
        splits = {split: _split_items(src, folder, options.limit_per_class) for split, folder in SPLIT_FOLDERS.items()}
        flat = not (src / "images" / "train").is_dir()
        details = {"layout": "flat" if flat else "per-split", "test_folder": "val",
                   "limit_per_class": options.limit_per_class}
        return ImportPlan([CLASS_NAME], splits, read_points=read_salicon_points, details=details)


def _split_items(src: Path, folder: str, limit: int | None) -> list[Item]:
    where, scope = _split_folder(src / "images", folder)
    images = [p for p in list_files(where, (".jpg", ".jpeg", ".png")) if p.name.startswith(scope)]
    if not images:
        raise UserError(f"{where}: no {scope}*.jpg images for the {folder} split; expected {LAYOUT}")
    maps = _matched(src / "maps", folder, images, ".png", "map")
    points = _matched(src / "fixations", folder, images, ".mat", "fixation file")
    return [Item(i, 0, m, p) for i, m, p in zip(images, maps, points, strict=True)][:limit]


def _split_folder(root: Path, folder: str) -> tuple[Path, str]:
    """`root/folder` when it exists, else `root` itself with the split told apart by the COCO file prefix."""
    if (root / folder).is_dir():
        return root / folder, ""
    return root, f"COCO_{folder}2014_"


def _matched(root: Path, folder: str, images: list[Path], suffix: str, kind: str) -> list[Path | None]:
    if not root.is_dir():
        return [None] * len(images)
    where, scope = _split_folder(root, folder)
    return matched_maps(images, where, suffix, scope=scope, kind=kind)


def read_salicon_points(path: Path, source: tuple[int, int], target: tuple[int, int]) -> np.ndarray:
    """Fixations of every observer in a SALICON `.mat`, as (K, 3) int32 (observer, y, x) on the `target` grid.

    Args:
        source: The image's own (H, W), used when the file has no `resolution`.
    """
    gaze, resolution = _load_mat(path)
    height, width = resolution or source
    rows = [np.zeros((0, 3), np.int32)]
    for observer, subject in enumerate(gaze.flatten()):
        xy = _as_points(subject["fixations"], path)  # (M, 2) [x, y], 1-based
        inside = np.isfinite(xy).all(1) & (xy >= 1).all(1) & (xy[:, 0] <= width) & (xy[:, 1] <= height)
        yx = scale_points(xy[inside][:, ::-1] - 1, (height, width), target)  # 0-based (y, x) on the target
        rows.append(np.column_stack([np.full(len(yx), observer, np.int32), yx]))
    return np.concatenate(rows).astype(np.int32)


def _load_mat(path: Path) -> tuple[np.ndarray, tuple[int, int] | None]:
    """The `gaze` struct array and `resolution` (H, W) of a SALICON fixation file."""
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
    except Exception as err:  # noqa: BLE001 -- scipy raises a dozen unrelated types for a damaged or v7.3 file
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"{path}: unreadable .mat ({reason}); expected a MATLAB v5 SALICON fixations file") from None
    gaze = mat.get("gaze")
    if not isinstance(gaze, np.ndarray) or gaze.dtype.names is None or "fixations" not in gaze.dtype.names:
        raise UserError(f"{path}: no gaze(i).fixations struct array; not a SALICON fixation file")
    res = np.asarray(mat.get("resolution", []), np.float64).ravel()
    return gaze, (int(res[0]), int(res[1])) if res.size == 2 and (res > 0).all() else None


def _as_points(value: object, path: Path) -> np.ndarray:
    try:
        return np.asarray(value, np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        raise UserError(f"{path}: gaze fixations are not M x 2 numbers") from None
