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

from ser_cli.data.checksum import checksum_state
from ser_cli.data.fingerprint import split_fingerprint
from ser_cli.data.schema import DATASET_KIND, SPLITS, open_checked, read_attr
from ser_cli.runtime.errors import UserError


@dataclass(frozen=True)
class SplitInfo:
    """What one split holds."""

    size: int
    has_maps: bool
    n_fixations: int
    has_masks: bool = False


class DataFile:
    """A validated, closed view of a data file's metadata; see `read_split` for the arrays."""

    def __init__(self, path: Path | str, verify: bool = True) -> None:
        """Open, check against the schema (`schema.check_layout`) and, with `verify`, against the content checksums
        (`ser_cli.data.checksum`; `checksums` says what was found: verified, absent or unchecked)."""
        self.path = Path(path)
        with open_checked(self.path, DATASET_KIND) as h5:
            a, p = h5.attrs, self.path
            self.schema_version = read_attr(p, a, "schema_version", int)
            self.height, self.width = read_attr(p, a, "height", int), read_attr(p, a, "width", int)
            self.storage = str(a.get("storage", "raw"))
            self.class_names: list[str] = read_attr(p, a, "class_names", json.loads)
            self.provenance: dict[str, Any] = read_attr(p, a, "provenance", json.loads, default={})
            if not isinstance(self.provenance, dict):
                raise UserError(f"{p}: attribute 'provenance' must be a JSON object")
            self.fingerprint = str(read_attr(p, a, "fingerprint"))
            self.splits = {s: self._split_info(h5[s]) for s in SPLITS}
            self.checksums = checksum_state(h5, p, verify)

    @staticmethod
    def _split_info(group: h5py.Group) -> SplitInfo:
        n_fix = int(group["fixations"].shape[0]) if "fixations" in group else 0
        return SplitInfo(size=int(group["labels"].shape[0]), has_maps="maps" in group, n_fixations=n_fix,
                         has_masks="masks" in group)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def spurious(self) -> bool:
        """Whether the training split carries the paper's brightening (`ser data spurious`, or synth's option)."""
        prov = self.provenance
        return bool(prov.get("spurious") or prov.get("params", {}).get("spurious"))

    def split_fingerprint(self, split: str) -> str:
        """`ser_cli.data.fingerprint.split_fingerprint` of one split (equal for a clean file and its spurious copy)."""
        with h5py.File(self.path, "r", locking=False) as h5:
            return split_fingerprint(h5, split)

    @property
    def has_maps(self) -> bool:
        return all(info.has_maps for info in self.splits.values())

    def masks(self, split: str, rows: np.ndarray) -> np.ndarray | None:
        """Object masks of `rows` (sorted, unique) of a split, bool (n, H, W), or None when the split has none."""
        if not self.splits[split].has_masks:
            return None
        with h5py.File(self.path, "r", locking=False) as h5:
            return h5[split]["masks"][np.asarray(rows, dtype=np.int64)] > 0

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
            "splits": {s: {"images": i.size, "has_maps": i.has_maps, "has_masks": i.has_masks,
                           "fixations": i.n_fixations, "per_class": counts[s]} for s, i in self.splits.items()},
            "fingerprint": self.fingerprint,
            "checksums": self.checksums,
            "provenance": self.provenance,
        }


def read_image(group: h5py.Group, row: int) -> np.ndarray:
    """One image (H, W, 3) uint8 from a split group, raw or PNG-encoded."""
    if "images" in group:
        return group["images"][row]
    return _decode(group["images_encoded"][row])


def read_images(group: h5py.Group, rows: np.ndarray, out: np.ndarray) -> None:
    """Images of `rows` (any order, repeats allowed) into `out` (B, 3, H, W) uint8, channel-first, as `read_image`
    reads them. One h5py read per row: a fancy selection of several rows of the (1, H, W, 3)-chunked images read
    about 300x slower."""
    raw = group["images"] if "images" in group else None
    encoded = group["images_encoded"] if raw is None else None
    for j in file_order(rows):
        row = int(rows[j])
        pixels = raw[row] if raw is not None else _decode(encoded[row])  # (H, W, 3)
        out[j] = pixels.transpose(2, 0, 1)


def file_order(rows: np.ndarray) -> np.ndarray:
    """Positions of `rows` in increasing row order, to read a batch front to back: on a file that is not in the page
    cache, increasing offsets let the OS read ahead."""
    return np.argsort(rows, kind="stable")


def _decode(blob: np.ndarray) -> np.ndarray:
    from PIL import Image

    return np.array(Image.open(io.BytesIO(blob.tobytes())).convert("RGB"))


def fixations_of(group: h5py.Group, row: int) -> np.ndarray:
    """Fixation points (K, 4) int32 (row, observer, y, x) of one image; empty when the split has none."""
    if "fixations" not in group:
        return np.zeros((0, 4), np.int32)
    lo, hi = group["fixation_ptr"][row], group["fixation_ptr"][row + 1]
    return group["fixations"][lo:hi]
