"""What the training loop needs from a class-incremental benchmark (`TaskStream`), and an in-memory one.

A batch is the data API's tuple `(images uint8 (B, 3, H, W), maps float32 (B, H, W), labels int64 (B,), indices
int64 (B,))`. Task t owns the classes `task_classes(t)` (task-ordered labels: task t holds
t * classes_per_task ... (t + 1) * classes_per_task - 1). `train_loader(tasks, epoch, start_batch)` streams the
training images of `tasks` (one task online; all of them for the `joint` upper bound) shuffled together in an
order that depends only on (the stream's seed, tasks, epoch), from batch `start_batch` on, so a resumed run sees
exactly the batches it had not consumed. `ser_cli.data.scenario.ClassIncrementalScenario` is the HDF5-backed
implementation; `TensorTaskStream` implements the protocol on tensors in memory, for tests and small runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

import torch
from torch import Tensor

from ser_cli.continual.seeds import DATA_ORDER, derive_seed

Batch = tuple[Tensor, Tensor, Tensor, Tensor]


class TaskStream(Protocol):
    """A class-incremental benchmark seen as a sequence of tasks."""

    n_tasks: int
    image_shape: tuple[int, int, int]

    def task_classes(self, task: int) -> range:
        """Labels of task `task`."""
        ...

    def train_loader(self, tasks: list[int], epoch: int = 0, start_batch: int = 0) -> Iterable[Batch]:
        """Training batches of `tasks` shuffled together, a function of (seed, tasks, epoch), from `start_batch`."""
        ...

    def test_loader(self, task: int) -> Iterable[Batch]:
        """Test batches of `task`, in a fixed order."""
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
        seed: int = 0,
        test_batch_size: int = 64,
    ) -> None:
        """Split the data into tasks by label.

        Args:
            train: (images uint8 (N, 3, H, W), maps (N, H, W), labels (N,)).
            test: The same for the test split.
            n_tasks: Number of tasks.
            classes_per_task: Classes per task; labels must lie in [0, n_tasks * classes_per_task).
            batch_size: Training batch size (the last batch of a task may be smaller).
            seed: Seed of the training order (with the tasks and the epoch).
            test_batch_size: Test batch size.
        """
        self.train, self.test = train, test
        self.n_tasks, self.classes_per_task = n_tasks, classes_per_task
        self.batch_size, self.test_batch_size, self.seed = batch_size, test_batch_size, seed
        self.image_shape = tuple(train[0].shape[1:])

    def task_classes(self, task: int) -> range:
        """Labels of task `task`."""
        return range(task * self.classes_per_task, (task + 1) * self.classes_per_task)

    def _rows(self, split: tuple[Tensor, Tensor, Tensor], tasks: list[int]) -> Tensor:
        task_of = split[2] // self.classes_per_task  # (N,)
        return torch.nonzero(torch.isin(task_of, torch.tensor(tasks))).flatten()  # (N_tasks,) in data order

    def _batches(self, split: tuple[Tensor, Tensor, Tensor], rows: Tensor, size: int) -> Iterator[Batch]:
        for chunk in rows.split(size):
            yield split[0][chunk], split[1][chunk], split[2][chunk], chunk

    def train_loader(self, tasks: list[int], epoch: int = 0, start_batch: int = 0) -> Iterator[Batch]:
        """Training batches of `tasks` shuffled together by (seed, tasks, epoch), from batch `start_batch` on."""
        rows = self._rows(self.train, tasks)
        generator = torch.Generator().manual_seed(derive_seed(self.seed, DATA_ORDER, epoch, *tasks))
        rows = rows[torch.randperm(len(rows), generator=generator)][start_batch * self.batch_size :]
        return self._batches(self.train, rows, self.batch_size)

    def test_loader(self, task: int) -> Iterator[Batch]:
        """Test batches of `task` in data order."""
        return self._batches(self.test, self._rows(self.test, [task]), self.test_batch_size)
