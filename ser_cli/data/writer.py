"""Atomic, resumable writer of `ser` data files (schema in `ser_cli.data.schema`).

Everything is written to `NAME.ser-work.partial` (a name of ser's own: a user's `NAME.partial` is never touched);
`finalize()` computes the fingerprint, marks the file complete and renames it, so a reader (or DVC) never sees a
half-written file. Reopening an existing work file with `resume=True` keeps the rows whose `done` flag is set, so an
interrupted import continues where it stopped. An existing `NAME` is replaced only when it is a finished data file
written by ser, and, unless `overwrite`, only by one of the same provenance (settings, source).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ser_cli import __version__
from ser_cli.data.checksum import write_checksums
from ser_cli.data.fingerprint import data_fingerprint
from ser_cli.data.schema import DATASET_KIND, SCHEMA_VERSION
from ser_cli.runtime.disk import check_free_space
from ser_cli.runtime.errors import RunFailure, UserError
from ser_cli.runtime.output_folder import check_output_file

VOLATILE = ("created_at", "created_at_epoch", "ser_version")  # provenance keys that do not change the contents


def partial_path(path: Path) -> Path:
    """Where the file lives while it is written."""
    return Path(f"{path}.ser-work.partial")


def check_data_output(path: Path, provenance: dict[str, Any], overwrite: bool) -> None:
    """Refuse `--out` unless it is new, or a finished ser data file of the same provenance (any with `overwrite`).

    Raises:
        UserError: a folder, device or file ser did not write (whatever the flags), or a data file of other
            settings without `overwrite`.
    """
    if not check_output_file(path, "--out", lambda p: _provenance(p) is not None, "a data file"):
        return
    if not overwrite and stable_provenance(_provenance(path) or {}) != stable_provenance(provenance):
        raise UserError(f"--out {path}: holds a ser data file of other settings or sources; pass --overwrite to "
                        "replace it, or choose another name")


def stable_provenance(provenance: dict[str, Any]) -> dict[str, Any]:
    """`provenance` as JSON would read it back, without the keys that do not change the contents."""
    return {k: v for k, v in json.loads(json.dumps(provenance)).items() if k not in VOLATILE}


def _provenance(path: Path) -> dict[str, Any] | None:
    """The provenance of a finished ser data file, or None when `path` is not one."""
    try:
        with h5py.File(path, "r", locking=False) as h5:
            if h5.attrs.get("kind") != DATASET_KIND or not h5.attrs.get("complete"):
                return None
            return json.loads(h5.attrs.get("provenance", "{}"))
    except (OSError, ValueError, TypeError):
        return None


class StoreWriter:
    """Writes the splits of one data file row by row; see the module docstring for the protocol."""

    def __init__(self, path: Path, *, height: int, width: int, class_names: list[str],
                 provenance: dict[str, Any], storage: str = "raw", resume: bool = False,
                 overwrite: bool = False) -> None:
        self.path = Path(path)
        check_data_output(self.path, {**provenance, "ser_version": __version__}, overwrite)
        self.height, self.width, self.storage = height, width, storage
        tmp = partial_path(self.path)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        if tmp.exists() and not (resume and self._same_layout(tmp, height, width, class_names, storage)):
            tmp.unlink()
        self.h5 = h5py.File(tmp, "a")
        attrs = self.h5.attrs
        attrs["schema_version"] = SCHEMA_VERSION
        attrs["kind"] = DATASET_KIND
        attrs["height"], attrs["width"], attrs["storage"] = height, width, storage
        attrs["class_names"] = json.dumps(class_names)
        attrs["provenance"] = json.dumps({**provenance, "ser_version": __version__}, sort_keys=True)
        attrs["complete"] = False

    @staticmethod
    def _same_layout(tmp: Path, height: int, width: int, class_names: list[str], storage: str) -> bool:
        try:
            with h5py.File(tmp, "r") as h5:
                a = h5.attrs
                return (int(a["height"]), int(a["width"]), a["storage"], json.loads(a["class_names"])) == (
                    height, width, storage, class_names)
        except (OSError, KeyError):
            return False

    def create_split(self, split: str, n: int, *, with_maps: bool = False, with_fixations: bool = False,
                     with_masks: bool = False) -> None:
        """Create (or, when resuming, keep) the datasets of `split` for `n` rows (`with_masks`: object masks)."""
        h, w = self.height, self.width
        rows_left = n if split not in self.h5 else int((~self.h5[split]["done"][:]).sum())
        per_row = h * w * (3 + with_maps + with_masks) + 9  # uncompressed: an upper bound for encoded storage too
        try:
            check_free_space(self.path, rows_left * per_row, f"the {split} split's {rows_left} rows")
        except RunFailure:
            self._discard_if_empty()
            raise
        group = self.h5.require_group(split)
        if self.storage == "raw":
            group.require_dataset("images", (n, h, w, 3), np.uint8, chunks=(1, h, w, 3), exact=True)
        else:
            group.require_dataset("images_encoded", (n,), h5py.vlen_dtype(np.uint8), exact=True)
        group.require_dataset("labels", (n,), np.int64, exact=True)
        group.require_dataset("done", (n,), bool, fillvalue=False, exact=True)
        if with_maps:
            group.require_dataset("maps", (n, h, w), np.uint8, chunks=(1, h, w), exact=True)
        if with_masks:
            group.require_dataset("masks", (n, h, w), np.uint8, chunks=(1, h, w), exact=True)
        if with_fixations:
            group.require_dataset("fixation_ptr", (n + 1,), np.int64, exact=True)

    def _discard_if_empty(self) -> None:
        """Remove the partial file when no row of it is written yet (nothing to resume from)."""
        if not any(self.h5[s]["done"][:].any() for s in self.h5 if "done" in self.h5[s]):
            self.h5.close()
            partial_path(self.path).unlink(missing_ok=True)

    def todo(self, split: str) -> np.ndarray:
        """Row indices of `split` not written yet."""
        return np.flatnonzero(~self.h5[split]["done"][:])

    def write_rows(self, split: str, rows: np.ndarray, images: np.ndarray, labels: np.ndarray,
                   maps: np.ndarray | None = None, masks: np.ndarray | None = None) -> None:
        """Write rows (sorted indices) of images (n, H, W, 3) uint8, labels (n,), optional maps (n, H, W) uint8 and
        optional object masks (n, H, W) uint8 (1 = object)."""
        group = self.h5[split]
        for j, row in enumerate(rows):
            if self.storage == "raw":
                group["images"][row] = images[j]
            else:
                group["images_encoded"][row] = np.frombuffer(encode_png(images[j]), np.uint8)
            if maps is not None:
                group["maps"][row] = maps[j]
            if masks is not None:
                group["masks"][row] = masks[j]
        group["labels"][rows] = labels
        group["done"][rows] = True

    def write_fixations(self, split: str, points: np.ndarray, ptr: np.ndarray) -> None:
        """All fixations of a split at once: points (M, 4) int32 (row, observer, y, x) and ptr (N + 1,)."""
        group = self.h5[split]
        if "fixations" in group:
            del group["fixations"]
        group.create_dataset("fixations", data=points.astype(np.int32))
        group["fixation_ptr"][:] = ptr

    def finalize(self) -> Path:
        """Fingerprint, checksums, mark complete, close and rename to the final name; returns that name."""
        self.h5.attrs["fingerprint"] = data_fingerprint(self.h5)
        write_checksums(self.h5)
        self.h5.attrs["complete"] = True
        self.h5.close()
        os.replace(partial_path(self.path), self.path)
        return self.path

    def close(self) -> None:
        """Close without finalising (the `.partial` stays for a later resume)."""
        if self.h5.id.valid:
            self.h5.close()


def encode_png(image: np.ndarray) -> bytes:
    """Lossless PNG bytes of an (H, W, 3) uint8 image (the `encoded` storage)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
