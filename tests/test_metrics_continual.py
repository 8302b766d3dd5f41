"""Continual-learning metrics on hand-computed accuracy matrices (numbers checked by hand in the comments)."""

import numpy as np
import pytest

from ser_cli.metrics import continual as C
from ser_cli.runtime.errors import UserError

nan = float("nan")

# Plain forgetting: every old task only loses accuracy.
R_PLAIN = [
    [90.0, nan, nan],
    [70.0, 80.0, nan],
    [60.0, 75.0, 85.0],
]
# Task 0 peaks after task 1 (65 > its diagonal 50): forgetting measures from the peak, BWT from the diagonal.
R_PEAK = [
    [50.0, nan, nan],
    [65.0, 70.0, nan],
    [45.0, 60.0, 80.0],
]
# Task 0 ends better than ever (55 > 50, 40): the two forgetting conventions differ.
R_RECOVER = [
    [50.0, nan, nan],
    [40.0, 70.0, nan],
    [55.0, 60.0, 80.0],
]


def test_average_accuracies_by_hand() -> None:
    """Averages after each task: 90, (70+80)/2 = 75, (60+75+85)/3 = 73.333...; anytime: (90+75+73.333)/3."""
    assert np.allclose(C.avg_acc_after_each_task(R_PLAIN), [90.0, 75.0, 220.0 / 3])
    assert C.final_avg_acc(R_PLAIN) == pytest.approx(220.0 / 3)
    assert C.anytime_avg_acc(R_PLAIN) == pytest.approx((90.0 + 75.0 + 220.0 / 3) / 3)  # 79.444...


def test_forgetting_and_bwt_plain_by_hand() -> None:
    """Forgetting: task 0 max(90, 70) - 60 = 30, task 1 80 - 75 = 5 -> 17.5. BWT: (60-90 + 75-80)/2 = -17.5."""
    assert C.forgetting(R_PLAIN) == pytest.approx(17.5)
    assert C.forgetting(R_PLAIN, "mammoth") == pytest.approx(17.5)
    assert C.backward_transfer(R_PLAIN) == pytest.approx(-17.5)


def test_forgetting_uses_the_max_over_earlier_tasks_not_the_diagonal() -> None:
    """Task 0: max(50, 65) - 45 = 20 (the diagonal would give 5); task 1: 70 - 60 = 10 -> 15.

    BWT uses the diagonal: (45-50 + 60-70)/2 = -7.5, so forgetting != -BWT here.
    """
    assert C.forgetting(R_PEAK) == pytest.approx(15.0)
    assert C.backward_transfer(R_PEAK) == pytest.approx(-7.5)


def test_forgetting_conventions_differ_when_a_task_recovers() -> None:
    """max_before_last: task 0 max(50, 40) - 55 = -5, task 1 70 - 60 = 10 -> 2.5.

    mammoth (max over every row, the last included): task 0 max(50, 40, 55) - 55 = 0, task 1 10 -> 5.0.
    BWT: (55-50 + 60-70)/2 = -2.5.
    """
    assert C.forgetting(R_RECOVER, "max_before_last") == pytest.approx(2.5)
    assert C.forgetting(R_RECOVER, "mammoth") == pytest.approx(5.0)
    assert C.backward_transfer(R_RECOVER) == pytest.approx(-2.5)


def _mammoth_forgetting_loop(rows: list[list[float]]) -> float:
    """Independent loop version of Mammoth's rule: rows are ragged (row t = tasks 0..t), missing entries are 0."""
    T = len(rows)
    terms = []
    for k in range(T - 1):
        best = max(rows[t][k] if k < len(rows[t]) else 0.0 for t in range(T))
        terms.append(best - rows[-1][k])
    return float(np.mean(terms))


def test_conventions_on_random_matrices_match_loops_and_clip_identity() -> None:
    rng = np.random.default_rng(0)
    for T in (2, 4, 7):
        ragged = [list(rng.uniform(0, 100, t + 1)) for t in range(T)]
        R = C.as_accuracy_matrix(ragged)
        per_task = [max(R[t][k] for t in range(k, T - 1)) - R[T - 1][k] for k in range(T - 1)]
        assert C.forgetting(ragged) == pytest.approx(np.mean(per_task))
        assert C.forgetting(ragged, "mammoth") == pytest.approx(_mammoth_forgetting_loop(ragged))
        assert C.forgetting(ragged, "mammoth") == pytest.approx(np.mean(np.maximum(per_task, 0.0)))


def test_single_task_has_no_forgetting_or_transfer() -> None:
    assert C.summarize([[88.0]], "class_il") == {
        "class_il_final_avg_acc": 88.0,
        "class_il_anytime_avg_acc": 88.0,
        "class_il_forgetting": 0.0,
        "class_il_bwt": 0.0,
    }


def test_entries_above_the_diagonal_are_ignored_and_ragged_rows_accepted() -> None:
    filled = np.array(R_PEAK)
    filled[np.triu_indices(3, 1)] = 99.0  # e.g. a framework that also scores future tasks
    ragged = [[50.0], [65.0, 70.0], [45.0, 60.0, 80.0]]
    assert C.summarize(filled, "x") == C.summarize(R_PEAK, "x") == C.summarize(ragged, "x")


def test_summarize_keys_and_values() -> None:
    out = C.summarize(R_RECOVER, "task_il", convention="mammoth")
    # final (55+60+80)/3 = 65; anytime (50 + 55 + 65)/3 = 56.667
    assert out == pytest.approx(
        {
            "task_il_final_avg_acc": 65.0,
            "task_il_anytime_avg_acc": 170.0 / 3,
            "task_il_forgetting": 5.0,
            "task_il_bwt": -2.5,
        }
    )
    assert all(type(v) is float for v in out.values())
    assert set(C.summarize(R_RECOVER, "")) == {"final_avg_acc", "anytime_avg_acc", "forgetting", "bwt"}


def test_user_errors() -> None:
    with pytest.raises(UserError, match="row t"):
        C.final_avg_acc([[1.0, 2.0], [3.0]])
    with pytest.raises(UserError, match="finite"):
        C.final_avg_acc([[nan, nan], [1.0, 2.0]])
    with pytest.raises(UserError, match="convention"):
        C.forgetting(R_PLAIN, "lopez")
    with pytest.raises(UserError):
        C.final_avg_acc([])
