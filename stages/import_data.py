"""Stage `import`: a published dataset into the HDF5 store (`ser data import FORMAT SRC --out FILE.h5`).

The format's importer lists the rows (`ser_cli.data.importers`); worker processes decode and LANCZOS-resize
them to `data.height` x `data.width` (the SER paper's 288x384 by default) in row order, and this process alone
writes them through `StoreWriter`, one chunk per image, raw pixels or PNG bytes (`data.storage`). Everything goes
to `FILE.h5.partial` first. Rerunning after an interruption keeps the rows already marked done, provided the
source listing and the settings are unchanged (else the stale partial is discarded), and decodes only the rest.
Fixation points of finished rows are kept in the partial too (`_pending_fixations`, one variable-length row each)
and gathered into the store's `fixations` / `fixation_ptr` at the end. The final name appears only on success.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from rich.progress import Progress

from ser_cli.config import DataConfig
from ser_cli.data.importers import Decoded, ImportOptions, ImportPlan, Item, build_importer, decode_item
from ser_cli.data.importers.parallel import ordered_map, worker_pool
from ser_cli.data.schema import SPLITS
from ser_cli.data.writer import StoreWriter, check_data_output, partial_path
from ser_cli.runtime.errors import UserError
from ser_cli.runtime.output_folder import check_disjoint, resolve_path
from ser_cli.runtime.output_lock import locks_outputs
from ser_cli.runtime.progress import log, progress_bar

BLOCK_ROWS = 32  # rows per write (and per flush): what an interruption can lose
PENDING = "_pending_fixations"
VOLATILE = ("created_at", "ser_version")  # provenance keys allowed to differ when resuming


@locks_outputs("out", torchrun=False)
def run(cfg: DataConfig, fmt: str, src: Path, out: Path, options: ImportOptions, overwrite: bool = False) -> Path:
    """Import the dataset at `src` in format `fmt` into `out`; returns the final path (`overwrite`: replace a ser
    data file of other provenance)."""
    importer = build_importer(fmt)
    src = resolve_path("SRC", Path(src).expanduser())
    if not src.is_dir():
        raise UserError(f"{src}: source folder not found")
    check_disjoint({"--out": Path(out)}, {"SRC": src})
    plan = importer.scan(src, options)
    provenance = _provenance(cfg, fmt, src, plan)
    check_data_output(Path(out), provenance, overwrite)  # before discarding a work file for an output we refuse
    _discard_stale_partial(Path(out), provenance)
    writer = StoreWriter(out, height=cfg.height, width=cfg.width, class_names=plan.class_names,
                         provenance=provenance, storage=cfg.storage, resume=True, overwrite=overwrite)
    decode = partial(decode_item, size=(cfg.height, cfg.width), read_points=plan.read_points)
    # said, not silent: a model trained later at another size makes poor maps of these images
    log(f"resizing every image to {cfg.height}x{cfg.width} (data.height x data.width; another size: --set "
        "data.height=H --set data.width=W)")
    try:
        with progress_bar() as bar, worker_pool(cfg.workers) as pool:
            # a few items per worker in flight keeps every worker busy while this process writes
            decode_all = partial(ordered_map, decode, pool=pool, window=4 * max(cfg.workers, 1))
            for split in SPLITS:
                _import_split(writer, plan, split, decode_all, bar)
        _gather_points(writer)
        return writer.finalize()
    except UserError:
        # a corrupt or missing source file: fixing it changes the listing, so this partial could never be resumed
        writer.close()
        partial_path(Path(out)).unlink(missing_ok=True)
        raise
    finally:
        writer.close()


def _provenance(cfg: DataConfig, fmt: str, src: Path, plan: ImportPlan) -> dict[str, Any]:
    """Where the file came from; everything but the time must match for a partial file to be resumed."""
    if "SOURCE_DATE_EPOCH" in os.environ:  # reproducible builds: a fixed time gives identical attributes
        created = datetime.fromtimestamp(int(os.environ["SOURCE_DATE_EPOCH"]), UTC)
    else:
        created = datetime.now(UTC)
    return {
        "format": fmt, "source": str(src), "size": [cfg.height, cfg.width], "resize": "lanczos, aspect ignored",
        "storage": cfg.storage, "created_at": created.isoformat(timespec="seconds"),
        "splits": {s: len(items) for s, items in plan.splits.items()},
        "listing_sha256": plan.listing_sha256(src), **plan.details,
    }


def _discard_stale_partial(out: Path, provenance: dict[str, Any]) -> None:
    """Delete `out.partial` unless it was started by the same import (same files, size, storage, options)."""
    tmp = partial_path(out)
    if not tmp.exists():
        return
    try:
        with h5py.File(tmp, "r", locking=False) as h5:
            old = json.loads(h5.attrs["provenance"])
    except (OSError, KeyError, ValueError):
        old = None
    same = old is not None and _stable(old) == _stable(provenance)
    if same:
        log(f"resuming {tmp}")
    else:
        log(f"{tmp}: left by a different import; starting over")
        tmp.unlink()


def _stable(provenance: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in json.loads(json.dumps(provenance)).items() if k not in VOLATILE}


def _import_split(writer: StoreWriter, plan: ImportPlan, split: str,
                  decode_all: Callable[[Iterator[Item]], Iterator[Decoded]], bar: Progress) -> None:
    """Decode the rows of `split` not done yet, in order, and write them block by block."""
    items, with_points = plan.splits[split], plan.has_points(split)
    writer.create_split(split, len(items), with_maps=plan.has_maps(split), with_fixations=with_points)
    if with_points and "fixations" not in writer.h5[split]:  # present: gathered already by an interrupted run
        writer.h5[split].require_dataset(PENDING, (len(items),), h5py.vlen_dtype(np.int32), exact=True)
    todo = writer.todo(split)
    task = bar.add_task(f"import {split}", total=len(items), completed=len(items) - len(todo), info="")
    with closing(decode_all(items[row] for row in todo)) as decoded:
        for start in range(0, len(todo), BLOCK_ROWS):
            rows = todo[start:start + BLOCK_ROWS]
            block = [next(decoded) for _ in rows]
            _write_block(writer, split, rows, block, np.array([items[r].label for r in rows], np.int64))
            bar.advance(task, len(rows))


def _write_block(writer: StoreWriter, split: str, rows: np.ndarray, block: list[Decoded], labels: np.ndarray) -> None:
    """Points first, then pixels and labels (which set `done`), then flush: a done row always has its points."""
    if block[0].points is not None:
        pending = writer.h5[split][PENDING]
        for row, item in zip(rows, block, strict=True):
            pending[row] = item.points.reshape(-1)  # (K * 3,) observer, y, x
    images = np.stack([item.image for item in block])  # (n, H, W, 3)
    maps = np.stack([item.map for item in block]) if block[0].map is not None else None  # (n, H, W)
    writer.write_rows(split, rows, images, labels, maps)
    writer.h5.flush()


def _gather_points(writer: StoreWriter) -> None:
    """Per-row points of every split -> the store's (row, observer, y, x) table and row pointers."""
    for split in SPLITS:
        if PENDING not in writer.h5[split]:
            continue
        per_row = [p.reshape(-1, 3) for p in writer.h5[split][PENDING][:]]
        table = [np.column_stack([np.full(len(p), row, np.int32), p]) for row, p in enumerate(per_row)]
        ptr = np.concatenate([[0], np.cumsum([len(p) for p in per_row])]).astype(np.int64)
        writer.write_fixations(split, np.concatenate(table).astype(np.int32).reshape(-1, 4), ptr)
        del writer.h5[split][PENDING]
