"""Accuracy of the learner on one task's test set, class-IL and task-IL, and saliency quality of the SER branch.

Class-incremental (class-IL) accuracy takes the argmax over the classes seen so far (current practice) or over
every logit, including classes not seen yet (the SER authors' code); task-incremental (task-IL) accuracy takes the
argmax over the task's own classes (method.md section 5; Mammoth reports both). Accuracies are percentages. With
SER, the saliency branch's test maps are scored against the target maps with KLD, CC and SIM
(`ser_cli.metrics.saliency`), averaged over images.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ser_cli.continual.learner import Learner
from ser_cli.continual.stream import Batch
from ser_cli.metrics.saliency import saliency_scores

SALIENCY_METRICS = ("kld", "cc", "sim")


@dataclass
class TaskScores:
    """Scores on one task's test set.

    Attributes:
        class_il: Class-IL accuracy in percent.
        task_il: Task-IL accuracy in percent.
        saliency: Mean KLD, CC, SIM of the saliency branch (empty without SER).
    """

    class_il: float
    task_il: float
    saliency: dict[str, float] = field(default_factory=dict)


@torch.no_grad()
def evaluate_task(learner: Learner, batches: Iterable[Batch], classes: range, allowed: Tensor | None) -> TaskScores:
    """Score the learner (in its current mode; the caller puts it in eval mode) on one task's test batches.

    Args:
        learner: The learner.
        batches: The task's test batches.
        classes: The task's labels (a contiguous range), for task-IL.
        allowed: bool (n_classes,) classes the class-IL argmax may pick, or None for every logit.

    Returns:
        The task's scores; NaN accuracies for an empty test set.
    """
    device = learner.normalize.device
    counts = torch.zeros(3, dtype=torch.int64, device=device)  # class-IL hits, task-IL hits, images
    sums = torch.zeros(len(SALIENCY_METRICS), dtype=torch.float64, device=device)
    for images, maps, labels, _ in batches:
        x, labels = learner.normalize(images), labels.to(device)  # (B, 3, H, W), (B,)
        with learner.autocast():
            logits = learner.logits(x, "eval").float()  # (B, n_classes)
        counts += _hits(logits, labels, classes, allowed)
        if learner.ser:
            scores = saliency_scores(learner.predict_saliency(x), maps.to(device))
            sums += torch.stack([scores[m].double().sum() for m in SALIENCY_METRICS])
    return _scores(counts.tolist(), sums.tolist(), learner.ser)


def _hits(logits: Tensor, labels: Tensor, classes: range, allowed: Tensor | None) -> Tensor:
    """(3,) class-IL hits, task-IL hits and batch size."""
    class_il = logits if allowed is None else logits.masked_fill(~allowed, float("-inf"))
    task_il = logits[:, classes.start : classes.stop].argmax(1) + classes.start  # (B,)
    size = torch.tensor(len(labels), device=labels.device)
    return torch.stack([(class_il.argmax(1) == labels).sum(), (task_il == labels).sum(), size])


def _scores(counts: list[int], sums: list[float], ser: bool) -> TaskScores:
    hits_class, hits_task, n = counts
    if n == 0:
        return TaskScores(float("nan"), float("nan"))
    saliency = {m: s / n for m, s in zip(SALIENCY_METRICS, sums, strict=True)} if ser else {}
    return TaskScores(100.0 * hits_class / n, 100.0 * hits_task / n, saliency)
