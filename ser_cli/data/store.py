"""Reading `ser` data files: metadata, labels and per-row access (schema in `ser_cli.data.schema`).

`DataFile` opens the file briefly to validate it and read what every stage needs (sizes, classes, fingerprint),
then closes it, so it can be handed to DataLoader workers, which open their own handle lazily (h5py handles
must not cross a fork).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ser_cli.data.schema import DATASET_KIND, SPLITS, open_checked


@dataclass(frozen=True)
class SplitInfo:
    """What one split holds."""

    size: int
    has_maps: bool
    n_fixations: int


class DataFile:
    """A validated, closed view of a data file's metadata; see `read_split` for the arrays."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        with open_checked(self.path, DATASET_KIND) as h5:
            a = h5.attrs
            self.schema_version = int(a["schema_version"])
            self.height, self.width = int(a["height"]), int(a["width"])
            self.storage = str(a.get("storage", "raw"))
            self.class_names: list[str] = json.loads(a["class_names"])
            self.provenance: dict[str, Any] = json.loads(a.get("provenance", "{}"))
            self.fingerprint = str(a["fingerprint"])
            self.splits = {s: self._split_info(h5[s]) for s in SPLITS}

    @staticmethod
    def _split_info(group: h5py.Group) -> SplitInfo:
        n_fix = int(group["fixations"].shape[0]) if "fixations" in group else 0
        return SplitInfo(size=int(group["labels"].shape[0]), has_maps="maps" in group, n_fixations=n_fix)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_maps(self) -> bool:
        return all(info.has_maps for info in self.splits.values())

    def labels(self, split: str) -> np.ndarray:
        """All labels of a split, int64 (N,)."""
        with h5py.File(self.path, "r", locking=False) as h5:
            return h5[split]["labels"][:]

    def info(self) -> dict[str, Any]:
        """Everything `ser data info` shows, as plain JSON-able values."""
        counts = {s: np.bincount(self.labels(s), minlength=self.n_classes).tolist() for s in SPLITS}
        return {
            "path": str(self.path),
            "schema_version": self.schema_version,
            "image_shape": [self.height, self.width, 3],
            "storage": self.storage,
            "n_classes": self.n_classes,
            "class_names": self.class_names,
            "splits": {s: {"images": i.size, "has_maps": i.has_maps, "fixations": i.n_fixations,
                           "per_class": counts[s]} for s, i in self.splits.items()},
            "fingerprint": self.fingerprint,
            "provenance": self.provenance,
        }


def read_image(group: h5py.Group, row: int) -> np.ndarray:
    """One image (H, W, 3) uint8 from a split group, raw or PNG-encoded."""
    if "images" in group:
        return group["images"][row]
    from PIL import Image

    return np.array(Image.open(io.BytesIO(group["images_encoded"][row].tobytes())).convert("RGB"))


def fixations_of(group: h5py.Group, row: int) -> np.ndarray:
    """Fixation points (K, 4) int32 (row, observer, y, x) of one image; empty when the split has none."""
    if "fixations" not in group:
        return np.zeros((0, 4), np.int32)
    lo, hi = group["fixation_ptr"][row], group["fixation_ptr"][row + 1]
    return group["fixations"][lo:hi]
