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

from ser_cli.continual.learner import Learner
from ser_cli.continual.stream import Batch
from ser_cli.metrics.accuracy import hits_per_task
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
def evaluate_task(learner: Learner, batches: Iterable[Batch], task: int, classes_per_task: int,
                  n_logits: int | None) -> TaskScores:
    """Score the learner (in its current mode; the caller puts it in eval mode) on one task's test batches.

    Args:
        learner: The learner.
        batches: The task's test batches.
        task: The task whose test batches these are.
        classes_per_task: Width of a task's block of logits (task-IL).
        n_logits: Classes the class-IL argmax ranges over (the first n_logits, those seen so far), None for all.

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
        counts += hits_per_task(logits, labels, classes_per_task, n_logits)[:, task]
        if learner.ser:
            scores = saliency_scores(learner.predict_saliency(x), maps.to(device))
            sums += torch.stack([scores[m].double().sum() for m in SALIENCY_METRICS])
    return _scores(counts.tolist(), sums.tolist(), learner.ser)


def _scores(counts: list[int], sums: list[float], ser: bool) -> TaskScores:
    hits_class, hits_task, n = counts
    if n == 0:
        return TaskScores(float("nan"), float("nan"))
    saliency = {m: s / n for m, s in zip(SALIENCY_METRICS, sums, strict=True)} if ser else {}
    return TaskScores(100.0 * hits_class / n, 100.0 * hits_task / n, saliency)
