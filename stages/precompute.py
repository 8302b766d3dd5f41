"""Stage `precompute`: saliency targets for every image of a data file (`ser precompute`), the SER pipeline's step 2.

SER (Bellitto et al., NeurIPS 2024; method.md section 2) trains the classifier against saliency maps predicted once,
offline, by the pretrained predictor. This stage runs that predictor (`ser pretrain-saliency`'s `model.pt`) in eval
mode over the train and test images, batched, with bf16 autocast on CUDA and DataLoader workers reading the HDF5
lazily, and writes a maps file (`ser_cli.data.maps`) aligned row by row with the data file. `--from-dataset` copies
the data file's own maps (SynthSal's ground truth, imported annotations) into the same format instead, and
`--method spectral-residual` or `--method center-bias` computes classical maps from the pixels alone
(`ser_cli.saliency.classical`), labelled baselines for data without fixations. The file records which (`method`).

Run it on CPU or one GPU with `ser precompute --model runs/sal/model.pt --data data/synth.h5 --out data/maps.h5`, or
on K processes with `torchrun --nproc_per_node=K -m ser_cli precompute ...`: each rank fills its own work file with
its share of the batches, rank 0 waits for all, assembles the final file and removes the work files. Interrupted
runs resume from the last committed batch. The result is the same bytes in all cases (see `ser_cli.data.maps_work`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
from rich.progress import Progress
from torch.utils.data import DataLoader

from ser_cli.config import PrecomputeConfig
from ser_cli.data.dataset import SplitDataset, collate
from ser_cli.data.maps import FROM_DATASET, MODEL, MapsFile, MapsLayout
from ser_cli.data.maps_work import MapsWorkFile, ShardPlan, all_work_files, assemble_maps_file, work_path
from ser_cli.data.schema import MAPS_KIND, SPLITS, file_kind
from ser_cli.data.store import DataFile
from ser_cli.metrics.headline import SALIENCY, headline, headline_path, is_headline_file, write_headline
from ser_cli.runs.model_input import size_warning, warn
from ser_cli.runtime import distributed
from ser_cli.runtime.atomic import write_json_atomic
from ser_cli.runtime.device import resolve_device
from ser_cli.runtime.errors import UserError
from ser_cli.runtime.output_folder import check_disjoint, check_output_file
from ser_cli.runtime.output_lock import locks_outputs
from ser_cli.runtime.progress import log, progress_bar
from ser_cli.saliency.map_sources import METHODS, Source, build_source

METRIC_BLOCK = 64


@dataclass
class PrecomputeResult:
    """What rank 0 reports: the maps file, the metrics file and its contents."""

    out: Path
    metrics_path: Path
    metrics: dict[str, float] = field(default_factory=dict)


@locks_outputs("out", "metrics_path", option={"metrics_path": "--metrics"})
def run(
    cfg: PrecomputeConfig,
    data: Path,
    out: Path,
    model: Path | None = None,
    device: str = "auto",
    metrics_path: Path | None = None,
    method: str | None = None,
) -> PrecomputeResult | None:
    """Write the maps file `out` for `data`. Returns None on ranks > 0.

    Args:
        model: The predictor's checkpoint, for `method="model"`.
        method: One of `METHODS`; None means `model` when `model` is given, else `from-dataset`.
    """
    check_disjoint({"--out": out, "--metrics": metrics_path}, {"--data": data, "--model": model})
    method = method or (MODEL if model is not None else FROM_DATASET)
    _check_method(method, model)
    data_file = DataFile(data)
    _check_out(Path(out), data_file, metrics_path)
    info = distributed.detect()
    dev = distributed.rank_device(resolve_device(device), info)
    source = build_source(method, data_file, model, dev, cfg.precision)
    warning = size_warning(model, getattr(source, "trained_size", None), (data_file.height, data_file.width),
                           str(data))
    if warning and info.rank == 0:
        warn(warning)
    layout = MapsLayout.for_data(data_file, cfg.compression, cfg.compression_level)
    plan = ShardPlan(layout.sizes, cfg.batch_size, info.world_size)
    distributed.init(dev)
    try:
        return _run_ranks(cfg, data_file, Path(out), source, layout, plan, info, dev, metrics_path)
    finally:
        distributed.shutdown()


def _check_method(method: str, model: Path | None) -> None:
    if method not in METHODS:
        raise UserError(f"--method: unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    if (method == MODEL) != (model is not None):
        raise UserError("--method model needs --model FILE" if model is None
                        else f"--method {method}: takes no --model (it does not use a predictor)")


def _check_out(out: Path, data: DataFile, metrics_path: Path | None = None) -> None:
    """Replace only ser's own maps file and metrics JSON (a folder, device or user's file is refused)."""
    check_output_file(out, "--out", lambda p: file_kind(p) == MAPS_KIND, "a maps file")
    metrics = Path(metrics_path) if metrics_path is not None else default_metrics_path(out)
    check_output_file(metrics, "--metrics", is_metrics_file, "a metrics file of `ser precompute`")
    check_output_file(headline_path(metrics), "--metrics", is_headline_file, "a headline file")


def is_metrics_file(path: Path) -> bool:
    """Whether `path` reads as the metrics JSON `ser precompute` writes (a flat object with `n_maps`)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"n_maps", "maps_per_second"} <= data.keys()


def _run_ranks(
    cfg: PrecomputeConfig,
    data: DataFile,
    out: Path,
    source: Source,
    layout: MapsLayout,
    plan: ShardPlan,
    info: distributed.DistInfo,
    dev: torch.device,
    metrics_path: Path | None,
) -> PrecomputeResult | None:
    """Every rank computes its share; rank 0 then assembles the file and measures it."""
    identity = {
        "data_fingerprint": data.fingerprint,
        "source": source.identity,
        "compression": layout.compression,
        "compression_level": layout.compression_level,
        "batch_size": plan.batch_size,
        "precision": cfg.precision,
        "rank": info.rank,
        "world_size": info.world_size,
    }
    start = time.perf_counter()
    work = MapsWorkFile(work_path(out, info.rank, info.world_size), layout, identity)
    try:
        computed = _compute_share(cfg, data.path, work, source, plan, info, dev)
    finally:
        work.close()
    distributed.barrier(dev)
    computed = distributed.all_sum(computed, dev)
    seconds = time.perf_counter() - start
    if not info.is_main:
        return None
    shards = [work_path(out, r, info.world_size) for r in range(info.world_size)]
    assemble_maps_file(out, layout, plan, shards, {"data_fingerprint": data.fingerprint, **source.attrs})
    for stale in {*shards, *all_work_files(out)}:  # also those of an interrupted run with another process count
        stale.unlink(missing_ok=True)
    return _write_metrics(out, data, metrics_path, computed, seconds)


def _compute_share(
    cfg: PrecomputeConfig,
    data_path: Path,
    work: MapsWorkFile,
    source: Source,
    plan: ShardPlan,
    info: distributed.DistInfo,
    dev: torch.device,
) -> int:
    """Compute and commit this rank's batches that are not done yet; returns how many maps it computed."""
    computed = 0
    with progress_bar() if info.is_main else Progress(disable=True) as bar:
        for split in SPLITS:
            done = work.done(split)
            mine = list(plan.batches(split, info.rank))
            todo = [(a, b) for a, b in mine if not done[a:b].all()]
            if info.is_main and len(todo) < len(mine):
                log(f"precompute {split}: resuming, {len(mine) - len(todo)} of {len(mine)} batches already done")
            task = bar.add_task(_task_name(split, info), total=len(mine), completed=len(mine) - len(todo), info="")
            for (a, b), maps in zip(todo, _predict(source, data_path, split, todo, cfg.workers, dev), strict=True):
                work.write(split, a, maps)
                computed += b - a
                bar.advance(task)
    return computed


def _task_name(split: str, info: distributed.DistInfo) -> str:
    return f"precompute {split}" + (f" (rank 0 of {info.world_size})" if info.is_distributed else "")


def _predict(
    source: Source,
    data_path: Path,
    split: str,
    batches: list[tuple[int, int]],
    workers: int,
    dev: torch.device,
) -> Iterator[np.ndarray]:
    """Yield uint8 maps (B, H, W) as numpy, one per batch of `batches`, reading the rows with DataLoader workers."""
    if not batches:
        return
    loader = DataLoader(
        SplitDataset(data_path, split),
        batch_sampler=[list(range(a, b)) for a, b in batches],
        num_workers=workers,
        collate_fn=collate,
        pin_memory=dev.type == "cuda",
    )
    for images, maps, _labels, _rows in loader:
        yield source(images, maps).cpu().numpy()


def _write_metrics(
    out: Path, data: DataFile, metrics_path: Path | None, computed: float, seconds: float
) -> PrecomputeResult:
    """`n_maps`, `maps_per_second` (of this invocation) and, when the data has ground truth, CC / KLD / SIM."""
    maps = MapsFile(out)
    metrics: dict[str, float] = {
        "n_maps": sum(maps.sizes.values()),
        "maps_per_second": computed / seconds if computed else float("nan"),
    }
    if data.has_maps:
        metrics.update(quality_metrics(maps, data))
    path = Path(metrics_path) if metrics_path is not None else default_metrics_path(out)
    write_json_atomic(path, metrics)
    write_headline(path, headline(metrics, SALIENCY))  # what `dvc metrics show` prints
    return PrecomputeResult(out=out, metrics_path=path, metrics=metrics)


def default_metrics_path(out: Path) -> Path:
    """`data/maps.h5` -> `data/maps.metrics.json` (next to the maps, one per maps file)."""
    return Path(out).with_suffix(".metrics.json")


def quality_metrics(maps: MapsFile, data: DataFile) -> dict[str, float]:
    """Mean CC, KLD and SIM of the stored maps against the data's ground truth, overall and per split."""
    from ser_cli.metrics.saliency import cc, kld, sim

    scores: dict[str, list[np.ndarray]] = {}
    with h5py.File(data.path, "r", locking=False) as h5:
        for split in SPLITS:
            for start in range(0, maps.sizes[split], METRIC_BLOCK):
                pred = torch.from_numpy(maps.read(split, start, start + METRIC_BLOCK)).float()  # (b, H, W)
                truth = torch.from_numpy(h5[split]["maps"][start : start + METRIC_BLOCK]).float()  # (b, H, W)
                for name, fn in (("cc", cc), ("kld", kld), ("sim", sim)):
                    scores.setdefault(f"{split}_{name}", []).append(fn(pred, truth).double().numpy())
    metrics = {k: float(np.concatenate(v).mean()) for k, v in scores.items()}
    for name in ("cc", "kld", "sim"):
        metrics[name] = float(np.concatenate(scores[f"train_{name}"] + scores[f"test_{name}"]).mean())
    return metrics
