"""Maps files (`kind = "ser-maps"`, schema version 1): saliency targets aligned row by row with a data file.

Layout (see also `ser_cli.data.schema`): groups `train` and `test`, each with `maps` uint8 (N, H, W), one chunk per
map (`chunks=(1, H, W)`, so a random read touches one chunk; tooling-notes 3.1), filtered by `none`, `gzip` or `lzf`.
Each map is normalised on its own: 255 is the image's maximum (the saliency *distribution* is what the replay
target needs, and readers renormalise to sum 1). File attributes: `schema_version`, `kind`, `data_fingerprint` (the
content fingerprint of the data file the rows belong to), `method` (what made the maps: `model`, `from-dataset`, or a
classical method of `ser_cli.saliency.classical` such as `spectral-residual` or `center-bias`), `model_sha256` (sha256
of the predictor checkpoint, or `"from-dataset"` when the maps were copied from the data file; absent for a classical
method, which records its fixed parameters as JSON in `method_settings` instead), `height`, `width`, `compression`,
`compression_level`, `ser_version`, `complete`. Files written before `method` existed are read as `model` (or
`from-dataset`, from their `model_sha256`).

Writing them (resumable work files, the shard plan, the final assembly) lives in `ser_cli.data.maps_work`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor

from ser_cli.data.checksum import checksum_state, stored_checksums
from ser_cli.data.schema import MAPS_KIND, SPLITS, open_checked, read_attr
from ser_cli.data.store import DataFile
from ser_cli.runtime.errors import UserError

FROM_DATASET = "from-dataset"
MODEL = "model"
COMPRESSIONS = ("none", "gzip", "lzf")
BLANK_SAMPLE = 64  # maps read per split to tell an all-zero file (a few ms even at 288x384)


def quantize_maps(maps: Tensor) -> Tensor:
    """Float maps (B, H, W) or (B, 1, H, W), any non-negative scale -> uint8 (B, H, W) with each map's max at 255.

    An all-zero map stays all zero (readers treat it as uniform).
    """
    if maps.dim() == 4:
        maps = maps[:, 0]
    maps = maps.float()  # bf16 predictions are rescaled in fp32 so 255 levels are all reachable
    peak = maps.amax(dim=(-2, -1), keepdim=True)  # (B, 1, 1)
    scaled = maps / torch.where(peak > 0, peak, torch.ones_like(peak)) * 255.0  # (B, H, W) in [0, 255]
    return scaled.round().clamp_(0, 255).to(torch.uint8)


@dataclass(frozen=True)
class MapsLayout:
    """Shapes and storage filter of the `maps` datasets of one maps file (and of its work files)."""

    height: int
    width: int
    sizes: dict[str, int]
    compression: str = "gzip"
    compression_level: int = 1

    def __post_init__(self) -> None:
        if self.compression not in COMPRESSIONS:
            raise UserError(f"precompute.compression: must be one of {list(COMPRESSIONS)} (got {self.compression!r})")

    @classmethod
    def for_data(cls, data: DataFile, compression: str = "gzip", compression_level: int = 1) -> MapsLayout:
        """The layout of maps for every row of `data`."""
        return cls(data.height, data.width, {s: data.splits[s].size for s in SPLITS}, compression, compression_level)

    def filter_kwargs(self) -> dict[str, Any]:
        """h5py `create_dataset` arguments of the filter (uint8 gains nothing from `shuffle`; tooling-notes 3.2)."""
        if self.compression == "gzip":
            return {"compression": "gzip", "compression_opts": self.compression_level}
        if self.compression == "lzf":
            return {"compression": "lzf"}
        return {}

    def create_maps(self, group: h5py.Group, split: str) -> h5py.Dataset:
        """Create `group/maps` for `split`: (N, H, W) uint8, one chunk per map."""
        shape = (self.sizes[split], self.height, self.width)
        return group.create_dataset(
            "maps", shape, np.uint8, chunks=(1, self.height, self.width), track_times=False, **self.filter_kwargs()
        )


class MapsFile:
    """A validated, closed view of a complete maps file; `read` opens it briefly."""

    def __init__(self, path: Path | str, verify: bool = True) -> None:
        """Open and check against the schema and, with `verify`, the content checksums (`ser_cli.data.checksum`)."""
        self.path = Path(path)
        with open_checked(self.path, MAPS_KIND) as h5:
            a, p = h5.attrs, self.path
            self.schema_version = read_attr(p, a, "schema_version", int)
            self.data_fingerprint = str(a.get("data_fingerprint", ""))
            self.model_sha256: str | None = str(a["model_sha256"]) if "model_sha256" in a else None
            self.method = str(a.get("method", FROM_DATASET if self.model_sha256 == FROM_DATASET else MODEL))
            self.method_settings = read_attr(p, a, "method_settings", json.loads, default={})
            self.compression_level = int(a.get("compression_level", 0))
            self.ser_version = str(a.get("ser_version", ""))
            self.height, self.width = read_attr(p, a, "height", int), read_attr(p, a, "width", int)
            self.compression = str(a.get("compression", "none"))
            self.sizes = {s: int(h5[s]["maps"].shape[0]) for s in SPLITS}  # uint8 by the schema: no NaN hides
            self.checksums = checksum_state(h5, p, verify)
            stored = stored_checksums(h5)
            # what the maps are, byte for byte: part of a run's identity, so a resume refuses other maps
            self.content = None if stored is None else hashlib.sha256(
                json.dumps(stored, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def from_dataset(self) -> bool:
        """True when the maps were copied from the data file rather than predicted."""
        return self.method == FROM_DATASET

    @property
    def source(self) -> str:
        """What made the maps, in one string: the model's sha256, `from-dataset`, or the classical method's name."""
        return self.model_sha256 if self.model_sha256 is not None else self.method

    def identity(self) -> str:
        """Which maps these are: the data file they were made for, the model (or dataset, or method) that made them
        and, for a file with checksums, its content (`FINGERPRINT:SOURCE:CONTENT`).

        Unchanged for the files written before checksums existed: `FINGERPRINT:MODEL_SHA256`.
        """
        content = f":{self.content}" if self.content else ""
        return f"{self.data_fingerprint}:{self.source}{content}"

    def info(self) -> dict[str, Any]:
        """What `ser data info` shows of a maps file, as plain JSON-able values."""
        return {
            "path": str(self.path),
            "kind": MAPS_KIND,
            "schema_version": self.schema_version,
            "map_shape": [self.height, self.width],
            "sizes": dict(self.sizes),
            "method": self.method,
            "method_settings": self.method_settings,
            "model_sha256": self.model_sha256,
            "data_fingerprint": self.data_fingerprint,
            "compression": self.compression,
            "compression_level": self.compression_level,
            "ser_version": self.ser_version,
            "checksums": self.checksums,
        }

    def check_matches(self, data_file: DataFile) -> None:
        """Raise a one-line UserError unless these maps were made for `data_file` (content and sizes) and are not
        all zero."""
        if self.data_fingerprint != data_file.fingerprint:
            raise UserError(
                f"{self.path}: was made for data file fingerprint {self.data_fingerprint[:12]}..., "
                f"not for {data_file.path} ({data_file.fingerprint[:12]}...); rerun ser precompute"
            )
        theirs = {s: data_file.splits[s].size for s in SPLITS}
        if (self.height, self.width, self.sizes) != (data_file.height, data_file.width, theirs):
            raise UserError(
                f"{self.path}: holds {self._shape_text(self.height, self.width, self.sizes)} but "
                f"{data_file.path} has {self._shape_text(data_file.height, data_file.width, theirs)}; "
                "rerun ser precompute"
            )
        self._check_not_blank()

    def _check_not_blank(self, rows: int = BLANK_SAMPLE) -> None:
        """Refuse a file whose first `rows` maps of every split are all zero: uniform targets, from which SER's
        branch learns nothing and against which saliency metrics mean nothing (a cheap look, not a full scan)."""
        if all(not self.read(split, 0, rows).any() for split in SPLITS if self.sizes[split]):
            raise UserError(f"{self.path}: its maps are all zero (the first {rows} of each split): uniform targets "
                            "teach SER nothing; remake them with `ser precompute`")

    @staticmethod
    def _shape_text(height: int, width: int, sizes: dict[str, int]) -> str:
        return f"{height}x{width} maps for {sizes['train']} train / {sizes['test']} test rows"

    def read(self, split: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Maps of rows [start, stop) of `split`, uint8 (n, H, W)."""
        with h5py.File(self.path, "r", locking=False) as h5:
            return h5[split]["maps"][start:stop]
