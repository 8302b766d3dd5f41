"""The class-incremental scenario: a data file (+ maps file) split into tasks by label order.

Task t holds the classes `[t * classes_per_task, (t + 1) * classes_per_task)`, the split the paper uses
(label // classes_per_task). Each task's training images are streamed once per epoch in an order that depends only
on (seed, task, epoch), so a resumed run can rebuild the same stream and skip the batches it has consumed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ser_cli.data.dataset import SplitDataset, collate
from ser_cli.data.store import DataFile
from ser_cli.runtime.errors import UserError


class ClassIncrementalScenario:
    """Tasks of `classes_per_task` classes over the train and test splits of `data_path`.

    Args:
        maps_path: the saliency targets (`ser precompute`); `None` uses the data file's own maps, if any.
        workers: DataLoader worker processes.
    """

    def __init__(self, data_path: Path | str, maps_path: Path | str | None, n_tasks: int, classes_per_task: int,
                 batch_size: int, seed: int, workers: int = 0, eval_batch_size: int = 64) -> None:
        self.data = DataFile(data_path)
        if n_tasks * classes_per_task != self.data.n_classes:
            raise UserError(f"{self.data.path}: has {self.data.n_classes} classes, but train.n_tasks x "
                            f"train.classes_per_task = {n_tasks} x {classes_per_task} = {n_tasks * classes_per_task}; "
                            f"{split_hint(self.data.n_classes)}")
        self.maps_path = Path(maps_path) if maps_path else None
        self.n_tasks, self.classes_per_task = n_tasks, classes_per_task
        self.batch_size, self.eval_batch_size, self.seed, self.workers = batch_size, eval_batch_size, seed, workers
        self._train_labels, self._test_labels = self.data.labels("train"), self.data.labels("test")
        for split, labels in (("train", self._train_labels), ("test", self._test_labels)):
            bad = labels[(labels < 0) | (labels >= self.n_classes)]
            if len(bad):
                raise UserError(f"{self.data.path}: {split}/labels holds {int(bad[0])}, outside the "
                                f"{self.n_classes} classes 0..{self.n_classes - 1} of the scenario")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(3, H, W) of every image."""
        return (3, self.data.height, self.data.width)

    @property
    def n_classes(self) -> int:
        return self.n_tasks * self.classes_per_task

    def task_classes(self, task: int) -> range:
        """Labels of task `task`."""
        return range(task * self.classes_per_task, (task + 1) * self.classes_per_task)

    def task_rows(self, task: int, split: str) -> np.ndarray:
        """Rows of `split` whose label belongs to `task`, in file order."""
        labels = self._train_labels if split == "train" else self._test_labels
        return np.flatnonzero(labels // self.classes_per_task == task)

    def stream_order(self, tasks: list[int], epoch: int) -> np.ndarray:
        """The shuffled training rows of `tasks` for one epoch: a function of (seed, tasks, epoch) only."""
        rows = np.concatenate([self.task_rows(t, "train") for t in tasks])
        rng = np.random.default_rng([self.seed, *tasks, epoch])
        return rows[rng.permutation(len(rows))]

    def n_batches(self, tasks: list[int]) -> int:
        """Stream batches per epoch over `tasks`."""
        n = sum(len(self.task_rows(t, "train")) for t in tasks)
        return -(-n // self.batch_size)

    def train_loader(self, tasks: list[int], epoch: int = 0, start_batch: int = 0) -> DataLoader:
        """Stream batches of `tasks` (one task online; all tasks for `joint`), from batch `start_batch` on."""
        rows = self.stream_order(tasks, epoch)[start_batch * self.batch_size:]
        return self._loader(SplitDataset(self.data.path, "train", rows, self.maps_path), self.batch_size)

    def test_loader(self, task: int) -> DataLoader:
        """Test batches of one task, in file order."""
        rows = self.task_rows(task, "test")
        return self._loader(SplitDataset(self.data.path, "test", rows, self.maps_path), self.eval_batch_size)

    def _loader(self, dataset: SplitDataset, batch_size: int) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=self.workers, collate_fn=collate,
                          persistent_workers=False, generator=torch.Generator().manual_seed(self.seed))


def fitting_splits(n_classes: int) -> list[tuple[int, int]]:
    """Every (n_tasks, classes_per_task) with at least two tasks whose product is `n_classes`, fewest tasks first."""
    return [(t, n_classes // t) for t in range(2, n_classes + 1) if n_classes % t == 0]


def split_hint(n_classes: int) -> str:
    """What to set for a data file of `n_classes` classes, e.g. "4 classes: use n_tasks=2, classes_per_task=2 or
    n_tasks=4, classes_per_task=1 (--set train.n_tasks=N --set train.classes_per_task=C)"."""
    splits = fitting_splits(n_classes)
    if not splits:
        return f"{n_classes} class: class-incremental learning needs at least 2 classes"
    options = " or ".join(f"n_tasks={t}, classes_per_task={c}" for t, c in splits)
    return f"{n_classes} classes: use {options} (--set train.n_tasks=N --set train.classes_per_task=C)"
