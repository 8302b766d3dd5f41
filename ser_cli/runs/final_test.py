"""The final model's pass over the test images of the tasks trained so far (`ser evaluate`'s library part).

Class-IL / task-IL hits per task (`metrics.accuracy.hits_per_task`, the same counting as the training loop's
per-task evaluation), the saliency branch's scores against the test maps (SER runs), and the model's forward time.
Works on anything with the `EvaluableRun` interface (`ser_cli.runs.run_io.LoadedRun`); prints nothing. The pass yields
one `EvalPass` per batch and `merge_passes` folds them in batch order, so batches computed by several processes
(`torchrun ... evaluate`) fold into the same numbers, bit for bit, as one process's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ser_cli.continual.settings import TrainSettings
from ser_cli.data.dataset import SplitDataset, collate
from ser_cli.data.store import DataFile
from ser_cli.metrics.accuracy import hits_per_task
from ser_cli.metrics.saliency import saliency_scores
from ser_cli.runtime.errors import UserError


class EvaluableRun(Protocol):
    """What evaluation needs from a trained run (`ser_cli.runs.run_io.LoadedRun` provides it)."""

    settings: TrainSettings
    class_names: list[str]
    data_fingerprint: str
    accuracy: dict[str, Any]
    config_hash: str
    classifier: nn.Module  # the classification `Backbone` that `logits` runs once per call (Grad-CAM hooks it)

    def logits(self, x01: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, n_classes), eval mode, differentiable end to end."""

    def saliency_map(self, x01: Tensor) -> Tensor | None:
        """(B, H, W) map of the saliency branch, or None without SER."""


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


class TestLoader:
    """Test batches of given rows as (x01 on the device, labels on the device, maps, fixations or None, rows)."""

    def __init__(self, data: DataFile, maps_path: Path | None, batch_size: int, device: torch.device) -> None:
        self.data, self.maps_path, self.batch_size, self.device = data, maps_path, batch_size, device
        self.has_targets = maps_path is not None or data.splits["test"].has_maps

    def batches(self, rows: np.ndarray, with_fixations: bool = False) -> Iterator[tuple[Tensor, ...]]:
        dataset = SplitDataset(self.data.path, "test", rows, self.maps_path, with_fixations=with_fixations)
        try:
            for item in DataLoader(dataset, batch_size=self.batch_size, num_workers=0, collate_fn=collate):
                images, maps, labels = item[0], item[1], item[2]
                x01 = images.to(self.device).float().div_(255)  # (B, 3, H, W) in [0, 1]
                fix = item[4].to(self.device) if with_fixations else None
                yield x01, labels.to(self.device), maps.to(self.device), fix, item[3]
        finally:
            dataset.close()


def eval_pass_batches(model: EvaluableRun, scope: EvalScope, loader: TestLoader, rows: np.ndarray,
                      on_batch: Callable[[int], None] = lambda n: None) -> list[EvalPass]:
    """Accuracy per task, saliency scores and forward time of each batch of test rows `rows` (in scope), in order.

    `on_batch(n)` is called after each batch of n images (e.g. a progress bar's advance).
    """
    T, ser, parts = scope.n_tasks, model.settings.ser, []
    for i, (x01, labels, maps, fix, _) in enumerate(loader.batches(rows, ser and scope.has_fixations)):
        part = EvalPass(np.zeros(T, np.int64), np.zeros(T, np.int64), np.zeros(T, np.int64))
        logits = _timed_logits(model, x01, part, warmup=i == 0)
        _count_hits(part, logits, labels, scope)
        if ser and loader.has_targets:
            _add_saliency(part, model.saliency_map(x01), maps, fix)
        parts.append(part)
        on_batch(len(labels))
    return parts


def merge_passes(parts: Iterable[EvalPass], n_tasks: int) -> EvalPass:
    """One pass from per-batch passes, sums folded in the order given (batch order: the one-process numbers)."""
    total = EvalPass(np.zeros(n_tasks, np.int64), np.zeros(n_tasks, np.int64), np.zeros(n_tasks, np.int64))
    for part in parts:
        total.class_hits += part.class_hits
        total.task_hits += part.task_hits
        total.counts += part.counts
        for name, value in part.saliency_sums.items():
            total.saliency_sums[name] = total.saliency_sums.get(name, 0.0) + value
            total.saliency_counts[name] = total.saliency_counts.get(name, 0) + part.saliency_counts[name]
        total.seconds += part.seconds
        total.timed_images += part.timed_images
        total.warmup = (total.warmup[0] + part.warmup[0], total.warmup[1] + part.warmup[1])
    return total


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


def summarise_test_pass(test: EvalPass, scope: EvalScope) -> dict[str, float]:
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
