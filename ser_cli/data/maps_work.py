"""Writing a maps file (`ser_cli.data.maps`) resumably, over any number of processes, to the same bytes.

Each process fills a *work file* (`MAPS.h5.ser-work.partial`, or `MAPS.h5.ser-work.rank{r}of{K}.partial` under
torchrun: names of ser's own, so a user's `MAPS.h5.partial` is never touched; each locked by its process) holding the
same `maps` datasets as the final file plus a `done` mask, committing one batch at a time: maps, flush, then `done`,
flush, so a kill -9 never leaves a row marked done whose map is missing. Which rows a process computes is its
`ShardPlan` (fixed batches dealt round-robin to ranks). The work file records what it was made from; a resume with
other inputs discards it. When every row is done, `assemble_maps_file` writes the final file afresh by copying the
already-compressed chunks in row order (`read_direct_chunk` / `write_direct_chunk`): the bytes of the result depend
only on the maps and the settings, not on interruptions or on how many processes computed them, and the final name
appears only when it is complete. Kept apart from the reader so that what a maps file *is* reads in one place and
how `ser precompute` gets there in another.
"""

from __future__ import annotations

import contextlib
import glob
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ser_cli import __version__
from ser_cli.data.checksum import write_checksums
from ser_cli.data.maps import MapsLayout
from ser_cli.data.schema import MAPS_KIND, SCHEMA_VERSION, SPLITS
from ser_cli.runtime.atomic import atomic_path
from ser_cli.runtime.disk import check_free_space
from ser_cli.runtime.distributed import rank_batches
from ser_cli.runtime.errors import RunFailure
from ser_cli.runtime.output_lock import output_lock

WORK_KIND = "ser-maps-work"


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


def work_path(out: Path, rank: int = 0, world_size: int = 1) -> Path:
    """The work file of `rank`: `OUT.ser-work.partial` in a one-process run, `OUT.ser-work.rank{r}of{K}.partial`
    under torchrun."""
    stem = f"{out}.ser-work"
    return Path(f"{stem}.partial") if world_size == 1 else Path(f"{stem}.rank{rank}of{world_size}.partial")


def all_work_files(out: Path) -> list[Path]:
    """Every work file of `out`, whatever the number of processes that wrote it."""
    pattern = f"{glob.escape(Path(out).name)}.ser-work.rank*of*.partial"
    return [work_path(out), *Path(out).parent.glob(pattern)]


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
        # one process per work file: a second torchrun job's rank r is refused here, not mid-write
        self._lock = contextlib.ExitStack()
        self._lock.enter_context(output_lock(self.path, "work file"))
        try:
            self.h5 = self._reopen() or self._create()
        except BaseException:
            self._lock.close()
            raise

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
        self._lock.close()


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
    sources = [h5py.File(p, "r") for p in work_files]
    try:
        with atomic_path(Path(out)) as tmp, h5py.File(tmp, "w") as h5:
            for split in SPLITS:
                target = layout.create_maps(h5.create_group(split), split)
                _copy_chunks([s[split] for s in sources], target, plan.owners(split), split)
            _write_attrs(h5, layout, attrs)
            write_checksums(h5)
    finally:
        for s in sources:
            s.close()
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
