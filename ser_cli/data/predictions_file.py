"""The HDF5 file of `ser predict --h5 FILE`: every predicted map at the model's input size, one row per image.

Layout (`kind = "ser-predictions"`, schema version 1): `names` (vlen str (N,), the output names of the PNGs),
`sources` (vlen str (N,), the image paths as found), `image_size` (int32 (N, 2), each image's own height and width),
`maps` (uint8 (N, H, W), 255 at each map's maximum, one gzip chunk per map); attributes `height` and `width` (the
model's input size), `model`, `model_sha256`, `identity` (of the images and settings: a rerun of the same command
may replace the file, another needs `--overwrite`) and `complete`. Written under a temporary name and renamed when
complete, so a reader never sees half a file; a file that `ser predict` did not write is never replaced. The
space of the maps is checked before the file is created and before each batch (`runtime.disk`: HDF5 cannot fail
cleanly once the disk is full; `ser predict --h5` on a full disk crashed with SIGSEGV before).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ser_cli.runtime.atomic import atomic_path
from ser_cli.runtime.disk import check_free_space
from ser_cli.runtime.errors import UserError

KIND = "ser-predictions"
SCHEMA_VERSION = 1
STR = h5py.string_dtype()


class PredictionsWriter:
    """Appends rows to the open file's resizable datasets."""

    def __init__(self, h5: h5py.File, size: tuple[int, int], path: Path) -> None:
        self.h5, self.path = h5, Path(path)
        h5.create_dataset("names", (0,), STR, maxshape=(None,))
        h5.create_dataset("sources", (0,), STR, maxshape=(None,))
        h5.create_dataset("image_size", (0, 2), np.int32, maxshape=(None, 2))
        h5.create_dataset("maps", (0, *size), np.uint8, maxshape=(None, *size), chunks=(1, *size),
                          compression="gzip", compression_opts=4)

    def add(self, names: list[str], sources: list[str], image_sizes: list[tuple[int, int]], maps: np.ndarray) -> None:
        """A batch of rows: maps (B, H, W) uint8 at the model size, and the images they belong to."""
        n, b = len(self.h5["names"]), len(names)
        text = sum(len(t.encode()) for t in (*names, *sources))
        check_free_space(self.path, maps.nbytes + text + 8 * b, f"{b} more map(s)")  # before HDF5 buffers any of it
        for key, values in (("names", names), ("sources", sources), ("image_size", image_sizes), ("maps", maps)):
            self.h5[key].resize(n + b, axis=0)
            self.h5[key][n:] = np.asarray(values, dtype=self.h5[key].dtype) if key != "maps" else values

    def __len__(self) -> int:
        return len(self.h5["names"])


@contextlib.contextmanager
def predictions_writer(path: Path, size: tuple[int, int], attrs: dict[str, Any],
                       rows: int = 0) -> Iterator[PredictionsWriter]:
    """Write `path` through `NAME.partial`: renamed when the block ends normally, removed when it fails.

    `rows`: how many maps will be added; their space (uncompressed: an upper bound) is checked before the file is
    created, so a disk too small stops the command before any work (RunFailure, one line, exit 1).
    """
    check_free_space(path, rows * (size[0] * size[1] + 8), f"the maps of {rows} images" if rows else "the file")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.attrs.update({"kind": KIND, "schema_version": SCHEMA_VERSION, "height": size[0], "width": size[1],
                             "complete": False, **attrs})
            yield PredictionsWriter(h5, size, path)
            h5.attrs["complete"] = True


def check_replaceable(path: Path, identity: str, overwrite: bool) -> None:
    """Refuse (one line) to replace a file `ser predict` did not write, or one of other inputs without overwrite."""
    path = Path(path)
    if not path.exists():
        return
    kind, old = None, None
    if path.is_file():
        with contextlib.suppress(OSError):
            with h5py.File(path, "r", locking=False) as h5:
                kind, old = h5.attrs.get("kind"), h5.attrs.get("identity")
    if kind != KIND:
        raise UserError(f"--h5 {path}: exists and was not written by `ser predict`; choose another file name")
    if old != identity and not overwrite:
        raise UserError(f"--h5 {path}: holds `ser predict` maps of other images or settings; pass --overwrite to "
                        "replace it, or choose another file name")
