"""Class-IL and task-IL hits of a batch, per task: the one counting both the training loop and `ser evaluate` use.

Class-IL predicts the argmax over the first `n_logits` classes (the classes seen so far, which are contiguous since
task t holds labels [t * classes_per_task, (t + 1) * classes_per_task)), or over every logit (the SER authors'
convention). Task-IL predicts the argmax within the label's own task block (method.md section 5).
"""

from __future__ import annotations

import torch
from torch import Tensor


def hits_per_task(logits: Tensor, labels: Tensor, classes_per_task: int, n_logits: int | None = None) -> Tensor:
    """(3, T) int64 on the logits' device: class-IL hits, task-IL hits and images, per task T of the head.

    Args:
        logits: (B, n_classes) scores, n_classes = T * classes_per_task.
        labels: (B,) true labels.
        classes_per_task: Width of a task's block of logits.
        n_logits: Classes the class-IL argmax ranges over (the first n_logits); None for all.
    """
    n_tasks = logits.shape[1] // classes_per_task
    tasks = labels // classes_per_task  # (B,)
    class_pred = logits[:, :n_logits].argmax(1)  # (B,)
    blocks = logits[:, : n_tasks * classes_per_task].reshape(len(labels), n_tasks, classes_per_task)  # (B, T, cpt)
    task_pred = blocks[torch.arange(len(labels), device=labels.device), tasks].argmax(1) + tasks * classes_per_task
    out = torch.zeros(3, n_tasks, dtype=torch.int64, device=logits.device)
    out[0].index_add_(0, tasks, (class_pred == labels).long())
    out[1].index_add_(0, tasks, (task_pred == labels).long())
    out[2].index_add_(0, tasks, torch.ones_like(labels))
    return out
