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

Writing is resumable, shardable and deterministic. Each process fills a *work file* (`MAPS.h5.partial`, or
`MAPS.h5.rank{r}of{K}.partial` under torchrun) holding the same `maps` datasets plus a `done` mask, committing one
batch at a time: maps, flush, then `done`, flush, so a kill -9 never leaves a row marked done whose map is missing.
The work file records what it was made from; a resume with other inputs discards it. When every row is done,
`assemble_maps_file` writes the final file afresh by copying the already-compressed chunks in row order
(`read_direct_chunk` / `write_direct_chunk`): the bytes of the result depend only on the maps and the settings,
not on interruptions or on how many processes computed them, and the final name appears only when it is complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor

from ser_cli import __version__
from ser_cli.data.schema import MAPS_KIND, SCHEMA_VERSION, SPLITS, open_checked, read_attr
from ser_cli.data.store import DataFile
from ser_cli.runtime.disk import check_free_space
from ser_cli.runtime.distributed import rank_batches
from ser_cli.runtime.errors import RunFailure, UserError

WORK_KIND = "ser-maps-work"
FROM_DATASET = "from-dataset"
MODEL = "model"
COMPRESSIONS = ("none", "gzip", "lzf")


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


@dataclass(frozen=True)
class ShardPlan:
    """How rows are cut into batches and batches dealt to ranks.

    Batches are fixed blocks `[k * batch_size, (k + 1) * batch_size)` of each split, and rank r takes batches
    r, r + K, r + 2K, ... So a batch holds the same rows however many ranks there are (a network's output can
    depend on the batch it runs in) and a resumed run recomputes exactly the batches that were not committed.
    """

    sizes: dict[str, int]
    batch_size: int
    world_size: int = 1

    def batches(self, split: str, rank: int) -> Iterator[tuple[int, int]]:
        """(start, stop) of the batches of `split` that `rank` computes, in row order."""
        yield from rank_batches(self.sizes[split], self.batch_size, rank, self.world_size)

    def owner(self, row: int) -> int:
        """The rank that computes `row`."""
        return (row // self.batch_size) % self.world_size

    def owners(self, split: str) -> np.ndarray:
        """int64 (N,): the rank that computes each row of `split`."""
        return (np.arange(self.sizes[split]) // self.batch_size) % self.world_size


class MapsFile:
    """A validated, closed view of a complete maps file; `read` opens it briefly."""

    def __init__(self, path: Path | str) -> None:
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
            self.sizes = {s: int(h5[s]["maps"].shape[0]) for s in SPLITS}
            for split in SPLITS:  # uint8 by the schema: no NaN or negative value can hide in a valid file
                if h5[split]["maps"].dtype != np.uint8:
                    raise UserError(f"{p}: /{split}/maps is {h5[split]['maps'].dtype}, expected uint8 maps written by "
                                    "`ser precompute`")

    @property
    def from_dataset(self) -> bool:
        """True when the maps were copied from the data file rather than predicted."""
        return self.method == FROM_DATASET

    @property
    def source(self) -> str:
        """What made the maps, in one string: the model's sha256, `from-dataset`, or the classical method's name."""
        return self.model_sha256 if self.model_sha256 is not None else self.method

    def identity(self) -> str:
        """Which maps these are: the data file they were made for and the model (or dataset, or method) that made them.

        Unchanged for the files written before `method` existed: `FINGERPRINT:MODEL_SHA256`.
        """
        return f"{self.data_fingerprint}:{self.source}"

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
        }

    def check_matches(self, data_file: DataFile) -> None:
        """Raise a one-line UserError unless these maps were made for `data_file` (content and sizes)."""
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

    @staticmethod
    def _shape_text(height: int, width: int, sizes: dict[str, int]) -> str:
        return f"{height}x{width} maps for {sizes['train']} train / {sizes['test']} test rows"

    def read(self, split: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Maps of rows [start, stop) of `split`, uint8 (n, H, W)."""
        with h5py.File(self.path, "r", locking=False) as h5:
            return h5[split]["maps"][start:stop]


def work_path(out: Path, rank: int = 0, world_size: int = 1) -> Path:
    """The work file of `rank`: `OUT.partial` in a one-process run, `OUT.rank{r}of{K}.partial` under torchrun."""
    return Path(f"{out}.partial") if world_size == 1 else Path(f"{out}.rank{rank}of{world_size}.partial")


class MapsWorkFile:
    """One process's resumable share of a maps file: the `maps` datasets plus a `done` mask per split.

    Args:
        path: The work file (see `work_path`).
        layout: Shapes and filter (the final file's).
        identity: What the maps are made from and how (fingerprints, filter, batch size, rank...). An existing
            work file with a different identity, or one a crash left unreadable, is discarded.
    """

    def __init__(self, path: Path, layout: MapsLayout, identity: dict[str, str | int]) -> None:
        self.path, self.layout, self.identity = Path(path), layout, identity
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.h5 = self._reopen() or self._create()

    def _reopen(self) -> h5py.File | None:
        if not self.path.exists():
            return None
        try:
            h5 = h5py.File(self.path, "a")
            if all(_same(h5.attrs.get(k), v) for k, v in self.identity.items()) and all(s in h5 for s in SPLITS):
                self._forget_missing_chunks(h5)
                return h5
            h5.close()
        except (OSError, KeyError, ValueError):
            pass  # a kill -9 in the middle of a metadata write: start this work file again
        self.path.unlink()
        return None

    @staticmethod
    def _forget_missing_chunks(h5: h5py.File) -> None:
        """Clear `done` for any row whose chunk is not stored (defence against a torn write)."""
        for split in SPLITS:
            done, maps = h5[split]["done"], h5[split]["maps"]
            rows = np.flatnonzero(done[:])
            missing = [r for r in rows if maps.id.get_chunk_info_by_coord((int(r), 0, 0)).byte_offset is None]
            if missing:
                done[np.asarray(missing)] = False

    def _create(self) -> h5py.File:
        rows = sum(self.layout.sizes.values())
        # the work file, then the assembled maps file beside it: twice the (uncompressed, an upper bound) maps
        check_free_space(self.path, 2 * rows * self.layout.height * self.layout.width, f"the maps of {rows} images")
        h5 = h5py.File(self.path, "w")
        for key, value in {"kind": WORK_KIND, **self.identity}.items():
            h5.attrs[key] = value
        for split in SPLITS:
            group = h5.create_group(split)
            self.layout.create_maps(group, split)
            group.create_dataset("done", (self.layout.sizes[split],), bool, fillvalue=False, track_times=False)
        h5.flush()
        return h5

    def done(self, split: str) -> np.ndarray:
        """bool (N,) rows of `split` already committed."""
        return self.h5[split]["done"][:]

    def write(self, split: str, start: int, maps: np.ndarray) -> None:
        """Commit rows [start, start + n) of `split`: uint8 maps (n, H, W), flushed before `done` is set."""
        stop = start + len(maps)
        self.h5[split]["maps"][start:stop] = maps
        self.h5.flush()  # the maps reach the file before the flag that says they are there
        self.h5[split]["done"][start:stop] = True
        self.h5.flush()

    def close(self) -> None:
        if self.h5.id.valid:
            self.h5.close()


def _same(stored: Any, wanted: str | int) -> bool:
    if stored is None:
        return False
    if isinstance(stored, bytes):
        stored = stored.decode()
    return type(wanted)(stored) == wanted


def assemble_maps_file(
    out: Path, layout: MapsLayout, plan: ShardPlan, work_files: list[Path], attrs: dict[str, str | int | None]
) -> Path:
    """Write the final maps file from complete work files (work_files[r] of rank r), then rename it to `out`.

    Chunks are copied compressed, in row order, into a fresh file, so the result is the same bytes however the
    work was split or interrupted. `attrs` are the provenance attributes (`data_fingerprint`, `method`,
    `model_sha256` or `method_settings`); a None value is not written.
    """
    tmp = Path(f"{out}.assemble.partial")
    sources = [h5py.File(p, "r") for p in work_files]
    try:
        with h5py.File(tmp, "w") as h5:
            for split in SPLITS:
                target = layout.create_maps(h5.create_group(split), split)
                _copy_chunks([s[split] for s in sources], target, plan.owners(split), split)
            _write_attrs(h5, layout, attrs)
    finally:
        for s in sources:
            s.close()
    os.replace(tmp, out)
    return Path(out)


def _copy_chunks(groups: list[h5py.Group], target: h5py.Dataset, owners: np.ndarray, split: str) -> None:
    for rank, group in enumerate(groups):
        if not group["done"][:][owners == rank].all():
            raise RunFailure(f"{group.file.filename}: rows of '{split}' are missing; rerun the same command to finish")
    for row, rank in enumerate(owners.tolist()):
        mask, chunk = groups[rank]["maps"].id.read_direct_chunk((row, 0, 0))
        target.id.write_direct_chunk((row, 0, 0), chunk, mask)


def _write_attrs(h5: h5py.File, layout: MapsLayout, attrs: dict[str, str | int | None]) -> None:
    base = {
        "schema_version": SCHEMA_VERSION,
        "kind": MAPS_KIND,
        "height": layout.height,
        "width": layout.width,
        "compression": layout.compression,
        "compression_level": layout.compression_level,
        "ser_version": __version__,
    }
    for key, value in {**base, **attrs}.items():
        if value is not None:
            h5.attrs[key] = value
    h5.attrs["complete"] = True
