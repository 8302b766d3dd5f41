"""What the continual-training loop works through, where it is, what it reports and what it returns.

`ContinualTrainer` (`loop.py`) walks a list of `Phase`s (one per task, or one joint phase), keeps a `Position` (the
part of its checkpointed state that says where to continue), reports `ProgressEvent`s and returns a
`ContinualResult`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class Phase:
    """One training phase: a task (or, for `joint`, all tasks), and the matrix row it fills.

    Attributes:
        task: Task id passed to the hooks and stored with buffer samples.
        tasks: Tasks whose training data the phase streams (shuffled together).
        row: Row of the accuracy matrices filled after the phase; tasks 0..row are evaluated.
    """

    task: int
    tasks: list[int]
    row: int


@dataclass
class Position:
    """Where the run is: phase index, epoch within it, batches consumed in that epoch, optimisation steps so far."""

    phase: int = 0
    epoch: int = 0
    batch: int = 0
    step: int = 0


@dataclass
class ProgressEvent:
    """What the loop reports to the progress callback.

    Attributes:
        kind: "step" after each training step, "task_end" after each task's evaluation.
        task: Current task.
        epoch: Current epoch within the task.
        batch: Batches consumed in this epoch (step events).
        step: Optimisation steps since the start of the run.
        losses: The step's losses (step events).
        class_il: Row of class-IL accuracies just filled (task_end events).
        task_il: Row of task-IL accuracies just filled (task_end events).
    """

    kind: Literal["step", "task_end"]
    task: int
    epoch: int
    batch: int
    step: int
    losses: dict[str, float] = field(default_factory=dict)
    class_il: list[float] = field(default_factory=list)
    task_il: list[float] = field(default_factory=list)


@dataclass
class ContinualResult:
    """Outcome of a run.

    Attributes:
        class_il: T x T class-IL accuracies in percent, R[t][k] after training task t on task k; NaN if unseen.
        task_il: T x T task-IL accuracies in percent.
        saliency: With SER, {"kld", "cc", "sim"} -> T x T scores of the saliency branch on the test maps.
        class_il_logits: "seen" or "all": which logits the class-IL argmax ran over.
        steps: Optimisation steps taken.
        buffer_nbytes: Device memory of the replay buffer in bytes (0 without a buffer).
    """

    class_il: list[list[float]]
    task_il: list[list[float]]
    saliency: dict[str, list[list[float]]]
    class_il_logits: str
    steps: int
    buffer_nbytes: int


def task_phases(schedule: str, n_tasks: int) -> list[Phase]:
    """The task sequence, or one joint phase that fills the last row."""
    if schedule == "joint":
        return [Phase(task=n_tasks - 1, tasks=list(range(n_tasks)), row=n_tasks - 1)]
    return [Phase(task=t, tasks=[t], row=t) for t in range(n_tasks)]
