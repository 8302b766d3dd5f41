"""Stage `evaluate`: metrics, robustness, saliency quality and figures of a trained run (`ser evaluate`).

From a run of `ser train` (anything with the `EvaluableRun` interface of `ser_cli.continual.run_io.LoadedRun`):

- continual-learning metrics from its accuracy matrices, class-IL and task-IL (`ser_cli.metrics.continual`;
  method.md section 5): final average accuracy, average after each task, anytime average, forgetting, BWT;
- one pass of the final model over the test images of every task trained so far: class-IL / task-IL accuracy
  (`test_*`, a check against the matrix's last row), the saliency branch's KLD / CC / SIM (+ NSS and AUC-Judd where
  the data file has fixation points) against the test maps (SER runs only), and the model's test throughput;
- adversarial accuracy for every (attack, epsilon) of `evaluate` on a fixed class-stratified subset of those test
  images, end to end through `run.logits` (`ser_cli.metrics.robustness`);
- figures: accuracy-matrix heatmap, average accuracy after each task, robust accuracy against epsilon, and test
  images with the saliency branch's map overlaid (for a run without SER: the input-gradient saliency of the true
  class, |d logit_y / d x| maximised over colour channels, Simonyan et al., ICLR-W 2014).

Everything is staged in `OUT.partial/` and moved into `OUT` when complete (`ser_cli.runtime.output_folder`):
`metrics.json` (flat numbers), `run.json` (the run's identity, for `ser compare`), `plots/*.csv` (for DVC) and the PNGs.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from rich.progress import Progress
from torch import Tensor
from torch.utils.data import DataLoader

from ser_cli.config import EvaluateConfig
from ser_cli.continual.settings import TrainSettings
from ser_cli.data.dataset import SplitDataset
from ser_cli.data.maps import MapsFile
from ser_cli.data.store import DataFile
from ser_cli.metrics.accuracy import hits_per_task
from ser_cli.metrics.attribution import input_gradient_saliency
from ser_cli.metrics.continual import SCENARIOS, as_accuracy_matrix, continual_metrics, is_joint
from ser_cli.metrics.robustness import (
    AttackSettings,
    RobustnessResult,
    check_attacks,
    check_epsilons,
    robust_accuracy,
    stratified_subset,
)
from ser_cli.metrics.saliency import saliency_scores
from ser_cli.plots.continual import plot_accuracy_matrix, plot_avg_accuracy, plot_robustness, plot_saliency_overlay
from ser_cli.runtime.atomic import write_json_atomic
from ser_cli.runtime.errors import UserError
from ser_cli.runtime.hashing import file_sha256
from ser_cli.runtime.output_folder import OutputFolder, check_disjoint, identity_hash
from ser_cli.runtime.progress import log, progress_bar

N_OVERLAY = 8


class EvaluableRun(Protocol):
    """What evaluation needs from a trained run (`ser_cli.continual.run_io.LoadedRun` provides it)."""

    settings: TrainSettings
    class_names: list[str]
    data_fingerprint: str
    accuracy: dict[str, Any]
    config_hash: str

    def logits(self, x01: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, n_classes), eval mode, differentiable end to end."""

    def saliency_map(self, x01: Tensor) -> Tensor | None:
        """(B, H, W) map of the saliency branch, or None without SER."""


@dataclass
class EvalResult:
    """The evaluation folder and its flat metrics."""

    out: Path
    metrics: dict[str, float]


@dataclass
class EvalPass:
    """Per-task hit counts, saliency sums and the model's forward time over the test images."""

    class_hits: np.ndarray
    task_hits: np.ndarray
    counts: np.ndarray
    saliency_sums: dict[str, float] = field(default_factory=dict)
    saliency_counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    timed_images: int = 0
    warmup: tuple[float, int] = (0.0, 0)


def check_run_dir(run_dir: Path) -> None:
    """UserError unless `run_dir` is a folder holding a trained model (`model.pt`)."""
    if not Path(run_dir).is_dir():
        raise UserError(f"--run {run_dir}: no such folder; give the --out folder of `ser train`")
    if not (Path(run_dir) / "model.pt").is_file():
        raise UserError(f"--run {run_dir}: has no model.pt; not a finished `ser train` run (or it is still running)")


def check_same_data(run: EvaluableRun, data: DataFile) -> None:
    """UserError unless `data` is the data file the run was trained on (same classes, same content)."""
    if list(run.class_names) != list(data.class_names):
        raise UserError(f"--data {data.path}: has classes {_short(data.class_names)}, but the run was trained on "
                        f"{_short(run.class_names)}; evaluate on the run's data file")
    if run.data_fingerprint != data.fingerprint:
        raise UserError(f"--data {data.path}: fingerprint {data.fingerprint[:12]}... is not the run's training data "
                        f"({run.data_fingerprint[:12]}...); evaluate on the data file the run was trained on")


def _short(names: list[str]) -> str:
    return "[" + ", ".join(names[:4]) + (f", ... ({len(names)} in all)]" if len(names) > 4 else "]")


def check_maps(maps_path: Path | None, data: DataFile) -> MapsFile | None:
    """The maps file, checked against the data file (one-line UserError when it was made for another)."""
    if maps_path is None:
        return None
    maps = MapsFile(maps_path)
    maps.check_matches(data)
    return maps


def trained_matrices(accuracy: dict[str, Any]) -> dict[str, np.ndarray]:
    """The accuracy matrices cut to the tasks trained so far (a per-task checkpointed run has NaN rows after).

    A `joint` run (one phase over all tasks) fills only the last row; it is kept whole, NaN rows included.
    """
    R = {k: np.array(accuracy[k], dtype=np.float64) for k in SCENARIOS}  # None -> NaN
    if is_joint(R):
        return R
    done = 0
    while done < len(R["class_il"]) and all(np.isfinite(R[k][done, : done + 1]).all() for k in SCENARIOS):
        done += 1
    if done == 0:
        raise UserError("the run's accuracy matrix has no finished task; train at least one task first")
    return {k: as_accuracy_matrix(R[k][:done, :done]) for k in SCENARIOS}


def run(cfg: EvaluateConfig, model: EvaluableRun, data_path: Path, out: Path, maps_path: Path | None = None,
        device: torch.device | str = "cpu", source: dict[str, Any] | None = None,
        overwrite: bool = False) -> EvalResult:
    """Evaluate `model` on the test split of `data_path` and write the evaluation folder `out`.

    Args:
        cfg: The `evaluate` section (epsilons, attacks, PGD steps, batch size, subset size, class-IL logits, seed).
        model: The trained run.
        data_path: Its data file (checked by fingerprint).
        out: The evaluation folder; an existing one is only replaced when it is an earlier evaluation (of another
            run or settings only with `overwrite`), and only the files that evaluation wrote are replaced.
        maps_path: Saliency targets (`ser precompute`); None uses the data file's own maps, if any.
        device: Where the model lives.
        source: Extra provenance for `run.json` (e.g. {"run_dir": ...}).
        overwrite: Replace a finished evaluation of another run or other settings.
    """
    device = torch.device(device)
    run_dir = Path(source["run_dir"]) if source and source.get("run_dir") else None
    check_disjoint({"--out": out}, {"--run": run_dir, "--data": data_path, "--maps": maps_path})
    data = DataFile(data_path)
    check_same_data(model, data)
    maps = check_maps(maps_path, data)
    attacks, epsilons = check_attacks(cfg.attacks), check_epsilons(cfg.epsilons)
    folder = OutputFolder(out, "ser evaluate", _output_identity(cfg, model, data, maps, run_dir), overwrite)
    if folder.state() == "complete":
        log(f"{out}: already complete for this run, data and settings, nothing to do")
        return EvalResult(Path(out), json.loads((Path(out) / "metrics.json").read_text()))
    R = trained_matrices(model.accuracy)
    scope = EvalScope.of(model.settings, data, len(R["class_il"]), cfg.class_il_logits)
    metrics, curves = continual_metrics(R)
    loader = _Loader(data, maps_path, cfg.batch_size, device)
    with progress_bar() as bar:
        test = _test_pass(model, scope, loader, bar)
        robustness = _robustness(model, scope, loader, cfg, attacks, epsilons, bar)
    metrics.update(_test_metrics(test, scope))
    metrics.update(robustness.flat())
    metrics["attack_images"] = robustness.n_images
    tmp = folder.start()
    try:
        (tmp / "plots").mkdir()
        _write_tables(tmp, R, curves, robustness)
        _write_figures(tmp, R, curves, robustness, _overlay(model, scope, loader, cfg.seed))
        write_json_atomic(tmp / "metrics.json", metrics)
        write_json_atomic(tmp / "run.json", _identity(model, data, maps_path, scope, cfg, source))
    except BaseException:
        folder.abandon()
        raise
    return EvalResult(folder.commit(), metrics)


def _output_identity(cfg: EvaluateConfig, model: EvaluableRun, data: DataFile, maps: MapsFile | None,
                     run_dir: Path | None) -> str:
    """What an evaluation depends on: settings, the run's bytes (or its identity), the data and the maps."""
    model_file = run_dir / "model.pt" if run_dir else None
    return identity_hash({
        "evaluate": cfg.model_dump(mode="json"),
        "run": file_sha256(model_file) if model_file and model_file.is_file() else model.config_hash,
        "seed": model.settings.seed,
        "accuracy": {k: np.asarray(v, dtype=float).tolist() for k, v in model.accuracy.items()},
        "data": data.fingerprint,
        "maps": [str(maps.path.resolve()), maps.model_sha256] if maps else None,
    })


@dataclass(frozen=True)
class EvalScope:
    """Which test images and logits count: the tasks trained so far, argmax over `n_logits` classes.

    Attributes:
        n_tasks: Tasks trained so far (rows of the accuracy matrix).
        classes_per_task: Classes per task (task of label y: y // classes_per_task).
        n_logits: Classes the class-IL argmax and the attacks range over (seen classes, or all with `all`).
        rows: Test rows of the trained tasks, (N,).
        labels: Their labels, (N,).
        has_fixations: Whether the test split has fixation points (for NSS / AUC-Judd).
    """

    n_tasks: int
    classes_per_task: int
    n_logits: int
    rows: np.ndarray
    labels: np.ndarray
    has_fixations: bool

    @classmethod
    def of(cls, settings: TrainSettings, data: DataFile, n_tasks: int, class_il_logits: str) -> EvalScope:
        labels = data.labels("test")
        seen = n_tasks * settings.classes_per_task
        rows = np.flatnonzero(labels < seen)
        n_logits = seen if class_il_logits == "seen" else settings.n_classes
        return cls(n_tasks, settings.classes_per_task, n_logits, rows, labels[rows],
                   data.splits["test"].n_fixations > 0)

    def logits_fn(self, model: EvaluableRun) -> Callable[[Tensor], Tensor]:
        """The attacked and scored function: the run's logits over the classes in scope."""
        return lambda x01: model.logits(x01)[:, : self.n_logits]


class _Loader:
    """Test batches of given rows as (x01 on the device, labels on the device, maps, fixations or None, rows)."""

    def __init__(self, data: DataFile, maps_path: Path | None, batch_size: int, device: torch.device) -> None:
        self.data, self.maps_path, self.batch_size, self.device = data, maps_path, batch_size, device
        self.has_targets = maps_path is not None or data.splits["test"].has_maps

    def batches(self, rows: np.ndarray, with_fixations: bool = False) -> Iterator[tuple[Tensor, ...]]:
        dataset = SplitDataset(self.data.path, "test", rows, self.maps_path, with_fixations=with_fixations)
        try:
            for item in DataLoader(dataset, batch_size=self.batch_size, shuffle=False, num_workers=0):
                images, maps, labels = item[0], item[1], item[2]
                x01 = images.to(self.device).float().div_(255)  # (B, 3, H, W) in [0, 1]
                fix = item[4].to(self.device) if with_fixations else None
                yield x01, labels.to(self.device), maps.to(self.device), fix, item[3]
        finally:
            dataset.close()


def _test_pass(model: EvaluableRun, scope: EvalScope, loader: _Loader, bar: Progress) -> EvalPass:
    """Accuracy per task, saliency scores and forward time over every test image in scope."""
    T = scope.n_tasks
    result = EvalPass(np.zeros(T, np.int64), np.zeros(T, np.int64), np.zeros(T, np.int64))
    task = bar.add_task("evaluate test set", total=len(scope.rows), info="")
    ser = model.settings.ser
    for i, (x01, labels, maps, fix, _) in enumerate(loader.batches(scope.rows, ser and scope.has_fixations)):
        logits = _timed_logits(model, x01, result, warmup=i == 0)
        _count_hits(result, logits, labels, scope)
        if ser and loader.has_targets:
            _add_saliency(result, model.saliency_map(x01), maps, fix)
        bar.advance(task, len(labels))
    return result


@torch.no_grad()
def _timed_logits(model: EvaluableRun, x01: Tensor, result: EvalPass, warmup: bool) -> Tensor:
    """Full logits (B, n_classes), timed; the first (warm-up) batch is kept apart and used only if it is alone."""
    _sync(x01.device)
    start = time.perf_counter()
    logits = model.logits(x01).float()
    _sync(x01.device)
    if warmup:
        result.warmup = (time.perf_counter() - start, len(x01))
    else:
        result.seconds += time.perf_counter() - start
        result.timed_images += len(x01)
    return logits


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _count_hits(result: EvalPass, logits: Tensor, labels: Tensor, scope: EvalScope) -> None:
    hits = hits_per_task(logits, labels, scope.classes_per_task, scope.n_logits)[:, : scope.n_tasks].cpu().numpy()
    result.class_hits += hits[0]
    result.task_hits += hits[1]
    result.counts += hits[2]


def _add_saliency(result: EvalPass, pred: Tensor | None, maps: Tensor, fix: Tensor | None) -> None:
    if pred is None:
        return
    for name, values in saliency_scores(pred.float(), maps, fix).items():
        finite = values[torch.isfinite(values)]  # NSS / AUC are NaN for an image without fixations
        result.saliency_sums[name] = result.saliency_sums.get(name, 0.0) + float(finite.double().sum())
        result.saliency_counts[name] = result.saliency_counts.get(name, 0) + int(finite.numel())


def _test_metrics(test: EvalPass, scope: EvalScope) -> dict[str, float]:
    """test_class_il_avg_acc / test_task_il_avg_acc (mean over tasks), saliency_*, test_images_per_second."""
    counts = np.maximum(test.counts, 1)
    out = {
        "test_class_il_avg_acc": float(np.mean(100.0 * test.class_hits / counts)),
        "test_task_il_avg_acc": float(np.mean(100.0 * test.task_hits / counts)),
        "test_images": int(test.counts.sum()),
        "tasks_evaluated": scope.n_tasks,
    }
    out.update({f"saliency_{k}": s / test.saliency_counts[k] for k, s in test.saliency_sums.items()
                if test.saliency_counts[k]})
    seconds, images = (test.seconds, test.timed_images) if test.timed_images else test.warmup
    if images:
        out["test_images_per_second"] = images / max(seconds, 1e-9)
    return out


def _robustness(model: EvaluableRun, scope: EvalScope, loader: _Loader, cfg: EvaluateConfig, attacks: list[str],
                epsilons: list[float], bar: Progress) -> RobustnessResult:
    rows = scope.rows[stratified_subset(scope.labels, cfg.attack_images, cfg.seed)]
    task = bar.add_task("adversarial attacks", total=len(rows), info=f"{len(attacks)}x{len(epsilons)} budgets")
    batches = ((x01, labels) for x01, labels, *_ in loader.batches(rows))
    return robust_accuracy(scope.logits_fn(model), batches, attacks, epsilons,
                           AttackSettings(cfg.pgd_steps, cfg.pgd_step_factor), seed=cfg.seed,
                           on_batch=lambda n: bar.advance(task, n))


@dataclass
class Overlay:
    """Images for the overlay figure: uint8 images, the model's maps, target maps (or None), captions."""

    images: np.ndarray
    maps: np.ndarray
    targets: np.ndarray | None
    titles: list[str]
    map_name: str


def _overlay(model: EvaluableRun, scope: EvalScope, loader: _Loader, seed: int) -> Overlay:
    """A class-stratified handful of test images with the saliency branch's map (or input-gradient saliency)."""
    rows = scope.rows[stratified_subset(scope.labels, N_OVERLAY, seed)]
    x01, labels, maps, _, _ = next(iter(_Loader(loader.data, loader.maps_path, len(rows), loader.device)
                                        .batches(rows)))
    pred = model.saliency_map(x01) if model.settings.ser else None
    name = "SER saliency branch"
    if pred is None:
        pred, name = input_gradient_saliency(scope.logits_fn(model), x01, labels), "input gradient (no SER)"
    images = (x01 * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()  # (N, H, W, 3)
    titles = [model.class_names[int(y)] for y in labels.cpu()]
    targets = maps.cpu().numpy() if loader.has_targets else None
    return Overlay(images, pred.detach().float().cpu().numpy(), targets, titles, name)


def _write_tables(folder: Path, R: dict[str, np.ndarray], curves: dict[str, np.ndarray],
                  robustness: RobustnessResult) -> None:
    """plots/avg_accuracy.csv, plots/accuracy_matrix.csv, plots/robustness.csv (DVC plot sources)."""
    T = len(R["class_il"])
    done = [t for t in range(T) if np.isfinite(curves["class_il"][t])]  # every task, or the last one for `joint`
    _csv(folder / "plots" / "avg_accuracy.csv", ["task", "class_il", "task_il"],
         [[t + 1, curves["class_il"][t], curves["task_il"][t]] for t in done])
    _csv(folder / "plots" / "accuracy_matrix.csv", ["after_task", "task", "class_il", "task_il"],
         [[t + 1, k + 1, R["class_il"][t, k], R["task_il"][t, k]] for t in done for k in range(t + 1)])
    rows = robustness.rows()
    _csv(folder / "plots" / "robustness.csv", ["attack", "epsilon", "eps_255", "accuracy"],
         [[r["attack"], r["epsilon"], r["eps_255"], r["accuracy"]] for r in rows])


def _csv(path: Path, head: list[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(head)
        writer.writerows(rows)


def _write_figures(folder: Path, R: dict[str, np.ndarray], curves: dict[str, np.ndarray],
                   robustness: RobustnessResult, overlay: Overlay) -> None:
    plot_accuracy_matrix(folder / "accuracy_matrix.png", R)
    plot_avg_accuracy(folder / "avg_accuracy.png", curves)
    if robustness.attacked:
        plot_robustness(folder / "robustness.png", robustness.rows())
    plot_saliency_overlay(folder / "saliency_overlay.png", overlay.images, overlay.maps, overlay.titles,
                          overlay.map_name, overlay.targets)


def _identity(model: EvaluableRun, data: DataFile, maps_path: Path | None, scope: EvalScope, cfg: EvaluateConfig,
              source: dict[str, Any] | None) -> dict[str, Any]:
    settings = model.settings
    return {
        "config_hash": model.config_hash,
        "method": settings.method,
        "ser": settings.ser,
        "seed": settings.seed,
        "label": settings.method + ("+ser" if settings.ser else ""),
        "settings": settings.to_dict(),
        "data": {"path": str(data.path), "fingerprint": data.fingerprint,
                 "test_fingerprint": data.split_fingerprint("test"), "spurious": data.spurious},
        "maps": str(maps_path) if maps_path else None,
        "saliency_target": "maps file" if maps_path else ("data file maps" if data.has_maps else None),
        "tasks_evaluated": scope.n_tasks,
        "class_il_logits": cfg.class_il_logits,
        "evaluate": cfg.model_dump(mode="json"),
        **(source or {}),
    }
