"""Writers of tiny datasets in the exact published layouts read by `ser data import`.

SALICON (`images/`, `maps/`, `fixations/` with per-image `.mat` structs as in saliency-datasets-and-metrics.md
section 3.1, written with scipy.io.savemat), MIT1003 (`ALLSTIMULI/*.jpeg`, `ALLFIXATIONMAPS/*_fixMap.jpg` and
JPEG-compressed `*_fixPts.jpg`), the SER authors' ImageNet layout (`images/{train,val}/<wnid>/*.JPEG`,
`annotations/{train,val}/<wnid>/*.png`) and torchvision's ImageFolder. Real JPEG / PNG files at odd sizes, so the
importers meet what they will meet on disk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

SALICON_SIZES = {"train": [(50, 70), (48, 64), (50, 70)], "val": [(50, 70), (37, 53)]}
MIT_SIZES = [(50, 70), (70, 50), (50, 70), (40, 60), (50, 70), (60, 45)]
MIT_POINTS = [(20, 35), (3, 4), (49, 69)]  # (y, x) 0-based on the 50x70 stimuli; clipped on the others


def noise_image(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    """A smooth random RGB image (JPEG keeps it close to what was drawn)."""
    coarse = rng.uniform(0, 255, size=(4, 5, 3)).astype(np.uint8)
    smooth = Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR)
    detail = rng.normal(0, 20, size=(height, width, 3))
    return Image.fromarray(np.clip(np.asarray(smooth) + detail, 0, 255).astype(np.uint8))


def blob_map(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    """An 8-bit grey saliency map: a Gaussian blob at a random place, 255 at its peak."""
    yy, xx = np.mgrid[0:height, 0:width]
    cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (0.15 * width) ** 2))
    return Image.fromarray(np.round(255 * blob / blob.max()).astype(np.uint8), mode="L")


def salicon_observers(height: int, width: int) -> list[np.ndarray]:
    """Fixations [x, y], 1-based, of three observers: corners and a known point, none, one outside + one inside."""
    return [np.array([[35, 20], [1, 1], [width, height]], np.float64),
            np.zeros((0, 2), np.float64),
            np.array([[width + 1, 10], [10, 5]], np.float64)]


def write_salicon_mat(path: Path, name: str, height: int, width: int, observers: list[np.ndarray]) -> None:
    """A SALICON fixation file: `image`, `resolution` = [H W] and the N x 1 `gaze` struct array."""
    gaze = np.zeros((len(observers), 1), dtype=[("location", "O"), ("timestamp", "O"), ("fixations", "O")])
    for i, fixations in enumerate(observers):
        gaze[i, 0]["location"] = fixations.copy()
        gaze[i, 0]["timestamp"] = np.arange(len(fixations), dtype=np.float64).reshape(-1, 1)
        gaze[i, 0]["fixations"] = fixations
    scipy.io.savemat(path, {"image": name, "resolution": np.array([[height, width]], np.uint16), "gaze": gaze})


def write_salicon(root: Path, flat: bool = False, seed: int = 0,
                  sizes_by_split: dict[str, list[tuple[int, int]]] | None = None) -> Path:
    """SALICON with train and val images, maps and fixations; `flat` puts every split in one folder per kind;
    `sizes_by_split` (default `SALICON_SIZES`): the (height, width) of each image of `train` and `val`."""
    rng = np.random.default_rng(seed)
    for folder, sizes in (sizes_by_split or SALICON_SIZES).items():
        for i, (h, w) in enumerate(sizes):
            stem = f"COCO_{folder}2014_{i:012d}"
            where = {kind: root / kind / ("" if flat else folder) for kind in ("images", "maps", "fixations")}
            for path in where.values():
                path.mkdir(parents=True, exist_ok=True)
            noise_image(rng, h, w).save(where["images"] / f"{stem}.jpg", quality=90)
            blob_map(rng, h, w).save(where["maps"] / f"{stem}.png")
            write_salicon_mat(where["fixations"] / f"{stem}.mat", stem, h, w, salicon_observers(h, w))
    return root


def write_mit1003(root: Path, nested: bool = False, seed: int = 0) -> Path:
    """MIT1003 with six stimuli, their continuous maps and JPEG point maps (`nested`: ALLSTIMULI/ALLSTIMULI/)."""
    rng = np.random.default_rng(seed)
    stimuli = root / "ALLSTIMULI" / ("ALLSTIMULI" if nested else "")
    maps = root / "ALLFIXATIONMAPS"
    stimuli.mkdir(parents=True)
    maps.mkdir(parents=True)
    for i, (h, w) in enumerate(MIT_SIZES):
        stem = f"i{i:04d}"
        noise_image(rng, h, w).save(stimuli / f"{stem}.jpeg", quality=90)
        blob_map(rng, h, w).save(maps / f"{stem}_fixMap.jpg", quality=90)
        points = np.zeros((h, w), np.uint8)
        for y, x in MIT_POINTS:
            points[min(y, h - 1), min(x, w - 1)] = 255
        Image.fromarray(points, mode="L").save(maps / f"{stem}_fixPts.jpg", quality=75)
    return root


def colour_image(index: int, height: int, width: int) -> Image.Image:
    """A flat image whose colour encodes `index` (< 100) in steps JPEG cannot blur: tens in red, units in green."""
    return Image.new("RGB", (width, height), (25 * (index // 10), 25 * (index % 10), 128))


def colour_index(rgb: np.ndarray) -> int:
    """The index `colour_image` encoded in an (R, G, B) pixel."""
    return int(round(rgb[0] / 25)) * 10 + int(round(rgb[1] / 25))


def write_ser_layout(root: Path, wnids: list[str], per_split: dict[str, int] | None = None, with_maps: bool = True,
                     size: tuple[int, int] = (13, 17)) -> Path:
    """The SER authors' layout; image j of wnid i is flat colour `colour_image(i)`, its map a blob."""
    rng = np.random.default_rng(0)
    for split, count in (per_split or {"train": 2, "val": 1}).items():
        for i, wnid in enumerate(wnids):
            folder = root / "images" / split / wnid
            folder.mkdir(parents=True)
            maps = root / "annotations" / split / wnid
            if with_maps:
                maps.mkdir(parents=True)
            for j in range(count):
                colour_image(i, *size).save(folder / f"{wnid}_{j}.JPEG", quality=95)
                if with_maps:  # maps of any size, as the authors' annotations are
                    blob_map(rng, size[0] + j, size[1] + 2 * j).save(maps / f"{wnid}_{j}.png")
    return root


def write_imagefolder(root: Path, classes: list[str], test_name: str = "test", seed: int = 0) -> Path:
    """ImageFolder with three train and two test images per class, mixing .jpg and .png at odd sizes."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", 3), (test_name, 2)):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for j in range(count):
                suffix = ".png" if (c + j) % 2 else ".jpg"
                noise_image(rng, 30 + 7 * j, 41 + 3 * c).save(folder / f"img{j}{suffix}")
    return root
