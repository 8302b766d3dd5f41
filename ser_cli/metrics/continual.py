"""Continual-learning metrics from an accuracy matrix: average accuracy, anytime average, forgetting, BWT.

`R[t][k]` is the accuracy (percent) on task k's test set after training task t (method.md section 5, SER, Bellitto
et al., NeurIPS 2024); entries with k > t (tasks not trained yet) are ignored and may be NaN. Average accuracy after
task t is the mean over k <= t (Chaudhry et al., 2018); the anytime average is the mean of those averages (the
"average incremental accuracy" of iCaRL, Rebuffi et al., CVPR 2017); forgetting follows Chaudhry et al., ECCV 2018
("max_before_last", method.md) or Mammoth's `utils/metrics.py` ("mammoth", the SER authors' framework); backward
transfer follows Lopez-Paz & Ranzato, NeurIPS 2017 (GEM), as Mammoth does. Pure numpy.
"""

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ser_cli.runtime.errors import UserError

Matrix = np.ndarray | Sequence[Sequence[float]]
ForgettingRule = Callable[[np.ndarray], np.ndarray]

FORGETTING_CONVENTIONS: dict[str, ForgettingRule] = {}


def register_forgetting(name: str) -> Callable[[ForgettingRule], ForgettingRule]:
    """Register a forgetting convention: a function from R (T, T), T >= 2, to per-task forgetting (T - 1,)."""

    def decorate(rule: ForgettingRule) -> ForgettingRule:
        FORGETTING_CONVENTIONS[name] = rule
        return rule

    return decorate


def as_accuracy_matrix(R: Matrix) -> np.ndarray:
    """R as a float (T, T) array with NaN above the diagonal, checked.

    Args:
        R: A square matrix, or Mammoth-style ragged rows (row t holds at least the t + 1 accuracies of tasks 0..t).

    Returns:
        (T, T) float64 array; entries with k > t are NaN whatever they were.

    Raises:
        UserError: R is empty, not square, has a row shorter than t + 1, or a missing accuracy at k <= t.
    """
    rows = [np.asarray(row, dtype=np.float64).ravel() for row in R]
    T = len(rows)
    if T == 0 or any(not t + 1 <= len(row) <= T for t, row in enumerate(rows)):
        raise UserError(f"accuracy matrix: need T rows with row t holding t+1..T accuracies, got lengths {_lengths(R)}")
    out = np.full((T, T), np.nan)
    for t, row in enumerate(rows):
        out[t, : t + 1] = row[: t + 1]  # only the tasks trained so far count
    if not np.isfinite(out[np.tril_indices(T)]).all():
        raise UserError("accuracy matrix: every accuracy R[t][k] with k <= t must be a finite number")
    return out


def _lengths(R: Matrix) -> list[int]:
    return [len(np.asarray(row).ravel()) for row in R]


def avg_acc_after_each_task(R: Matrix) -> np.ndarray:
    """Average accuracy over the tasks seen so far, after each task.

    Args:
        R: Accuracy matrix (T, T), percent.

    Returns:
        (T,) array: entry t is the mean of R[t][k] over k <= t.
    """
    R = as_accuracy_matrix(R)
    return np.nanmean(R, axis=1)  # NaNs are exactly the entries k > t


def final_avg_acc(R: Matrix) -> float:
    """Average accuracy over all T tasks after the last one (the headline number of the SER paper)."""
    return float(avg_acc_after_each_task(R)[-1])


def anytime_avg_acc(R: Matrix) -> float:
    """Mean over t of the average accuracy after task t (iCaRL's average incremental accuracy).

    This is a per-task-boundary average; it is not ocl_survey's AAA, which evaluates during training as well.
    """
    return float(avg_acc_after_each_task(R).mean())


@register_forgetting("max_before_last")
def _forgetting_max_before_last(R: np.ndarray) -> np.ndarray:
    """Chaudhry et al. 2018 / method.md: max_{k <= t < T-1} R[t][k] - R[T-1][k]; negative if a task improved."""
    T = R.shape[0]
    best_before_last = np.nanmax(R[: T - 1, : T - 1], axis=0)  # (T-1,) best accuracy seen before the last task
    return best_before_last - R[T - 1, : T - 1]


@register_forgetting("mammoth")
def _forgetting_mammoth(R: np.ndarray) -> np.ndarray:
    """Mammoth's `forgetting`: the max also runs over the last row, so each task's term is max(0, max_before_last)."""
    T = R.shape[0]
    best_ever = np.nanmax(R[:, : T - 1], axis=0)  # (T-1,) includes t = T-1
    return best_ever - R[T - 1, : T - 1]


def forgetting(R: Matrix, convention: str = "max_before_last") -> float:
    """Average forgetting of the first T-1 tasks (percentage points; higher = more forgetting).

    Conventions:
        "max_before_last" (method.md section 5; Chaudhry et al., ECCV 2018): mean over k < T-1 of
            max_{t < T-1} R[t][k] - R[T-1][k]. A task that ends better than it ever was counts negatively.
        "mammoth" (Mammoth `utils/metrics.py`, which the SER authors' code builds on): the max runs over every t,
            the last included, so each task's term is clipped at 0 and the average is >= the first convention.
    With a single task there is nothing to forget: 0.0.

    Args:
        R: Accuracy matrix (T, T), percent.
        convention: A name in FORGETTING_CONVENTIONS.

    Returns:
        Average forgetting.
    """
    if convention not in FORGETTING_CONVENTIONS:
        raise UserError(f"forgetting: convention must be one of {sorted(FORGETTING_CONVENTIONS)}, got {convention!r}")
    R = as_accuracy_matrix(R)
    if R.shape[0] == 1:
        return 0.0
    return float(FORGETTING_CONVENTIONS[convention](R).mean())


def backward_transfer(R: Matrix) -> float:
    """Backward transfer (Lopez-Paz & Ranzato 2017; Mammoth): mean over k < T-1 of R[T-1][k] - R[k][k].

    Negative when learning later tasks hurt earlier ones. With a single task: 0.0.
    """
    R = as_accuracy_matrix(R)
    T = R.shape[0]
    if T == 1:
        return 0.0
    return float((R[T - 1, : T - 1] - np.diag(R)[: T - 1]).mean())


def summarize(R: Matrix, prefix: str, convention: str = "max_before_last") -> dict[str, float]:
    """Flat scalar metrics for a metrics JSON, e.g. prefix "class_il" -> "class_il_final_avg_acc".

    Args:
        R: Accuracy matrix (T, T), percent.
        prefix: Key prefix; "" gives bare keys.
        convention: Forgetting convention (see `forgetting`).

    Returns:
        {prefix_final_avg_acc, prefix_anytime_avg_acc, prefix_forgetting, prefix_bwt} as Python floats.
    """
    R = as_accuracy_matrix(R)
    head = f"{prefix}_" if prefix else ""
    return {
        f"{head}final_avg_acc": final_avg_acc(R),
        f"{head}anytime_avg_acc": anytime_avg_acc(R),
        f"{head}forgetting": forgetting(R, convention),
        f"{head}bwt": backward_transfer(R),
    }


SCENARIOS = ("class_il", "task_il")


def is_joint(R: dict[str, np.ndarray]) -> bool:
    """Whether only the last row is filled (the `joint` upper bound: no task sequence, so no forgetting)."""
    T = len(R["class_il"])
    return T > 1 and all(np.isnan(R[k][:-1]).all() and np.isfinite(R[k][-1]).all() for k in SCENARIOS)


def continual_metrics(R: dict[str, np.ndarray]) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Flat class-IL / task-IL metrics (final, anytime, forgetting, BWT) and the average after each task.

    For a `joint` run only the final average accuracy exists; the curves are NaN before the last task.
    """
    if is_joint(R):
        curves = {k: np.where(np.arange(len(R[k])) == len(R[k]) - 1, np.nanmean(R[k][-1]), np.nan) for k in SCENARIOS}
        return {f"{k}_final_avg_acc": float(curves[k][-1]) for k in SCENARIOS}, curves
    metrics = {**summarize(R["class_il"], "class_il"), **summarize(R["task_il"], "task_il")}
    curves = {k: avg_acc_after_each_task(R[k]) for k in SCENARIOS}
    return metrics, curves


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
