"""What the training loop needs from a class-incremental benchmark (`TaskStream`), and an in-memory one.

A batch is the data API's tuple `(images uint8 (B, 3, H, W), maps float32 (B, H, W), labels int64 (B,), indices
int64 (B,))`. Task t owns the classes `task_classes(t)` (task-ordered labels: task t holds
t * classes_per_task ... (t + 1) * classes_per_task - 1). A training loader's order must depend only on its
`epoch_seed` (the loop derives it from (seed, task, epoch)) so that a resumed run sees the same batches;
`joint_train_loader` shuffles the union of all tasks (only the `joint` method asks for it). `TensorTaskStream`
implements the protocol on tensors in memory, for tests and small synthetic runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

import torch
from torch import Tensor

Batch = tuple[Tensor, Tensor, Tensor, Tensor]


class TaskStream(Protocol):
    """A class-incremental benchmark seen as a sequence of tasks."""

    n_tasks: int
    image_shape: tuple[int, int, int]

    def task_classes(self, task: int) -> range:
        """Labels of task `task`."""
        ...

    def train_loader(self, task: int, epoch_seed: int) -> Iterable[Batch]:
        """Training batches of `task`, shuffled by `epoch_seed` (same seed, same order)."""
        ...

    def test_loader(self, task: int) -> Iterable[Batch]:
        """Test batches of `task`, in a fixed order."""
        ...

    def joint_train_loader(self, epoch_seed: int) -> Iterable[Batch]:
        """Training batches of all tasks shuffled together (the `joint` upper bound)."""
        ...


class TensorTaskStream:
    """`TaskStream` over tensors held in memory."""

    def __init__(
        self,
        train: tuple[Tensor, Tensor, Tensor],
        test: tuple[Tensor, Tensor, Tensor],
        n_tasks: int,
        classes_per_task: int,
        batch_size: int,
        test_batch_size: int = 64,
    ) -> None:
        """Split the data into tasks by label.

        Args:
            train: (images uint8 (N, 3, H, W), maps (N, H, W), labels (N,)).
            test: The same for the test split.
            n_tasks: Number of tasks.
            classes_per_task: Classes per task; labels must lie in [0, n_tasks * classes_per_task).
            batch_size: Training batch size (the last batch of a task may be smaller).
            test_batch_size: Test batch size.
        """
        self.train, self.test = train, test
        self.n_tasks, self.classes_per_task = n_tasks, classes_per_task
        self.batch_size, self.test_batch_size = batch_size, test_batch_size
        self.image_shape = tuple(train[0].shape[1:])

    def task_classes(self, task: int) -> range:
        """Labels of task `task`."""
        return range(task * self.classes_per_task, (task + 1) * self.classes_per_task)

    def _rows(self, split: tuple[Tensor, Tensor, Tensor], tasks: range) -> Tensor:
        labels = split[2]
        lo, hi = tasks.start * self.classes_per_task, tasks.stop * self.classes_per_task
        return torch.nonzero((labels >= lo) & (labels < hi)).flatten()  # (N_task,)

    def _batches(self, split: tuple[Tensor, Tensor, Tensor], rows: Tensor, size: int) -> Iterator[Batch]:
        for chunk in rows.split(size):
            yield split[0][chunk], split[1][chunk], split[2][chunk], chunk

    def _shuffled(self, rows: Tensor, epoch_seed: int) -> Tensor:
        generator = torch.Generator().manual_seed(epoch_seed)
        return rows[torch.randperm(len(rows), generator=generator)]

    def train_loader(self, task: int, epoch_seed: int) -> Iterator[Batch]:
        """Training batches of `task`, shuffled by `epoch_seed`."""
        rows = self._shuffled(self._rows(self.train, range(task, task + 1)), epoch_seed)
        return self._batches(self.train, rows, self.batch_size)

    def joint_train_loader(self, epoch_seed: int) -> Iterator[Batch]:
        """Training batches of all tasks shuffled together."""
        rows = self._shuffled(self._rows(self.train, range(self.n_tasks)), epoch_seed)
        return self._batches(self.train, rows, self.batch_size)

    def test_loader(self, task: int) -> Iterator[Batch]:
        """Test batches of `task` in data order."""
        return self._batches(self.test, self._rows(self.test, range(task, task + 1)), self.test_batch_size)
