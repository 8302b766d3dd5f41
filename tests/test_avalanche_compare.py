"""The Avalanche comparison (`experiments/avalanche_compare.py`) feeds Avalanche exactly what `ser train` sees: the
same task split and stream order, the same pixels, the same initial weights, and counts accuracy as ser does.
Avalanche itself is not needed (it lives in its own venv); these check the helpers against ser's own code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.avalanche.ser_side import accuracy_row, eval_rows, initial_model, read_split, stream_rows
from experiments.avalanche.table import summarize
from ser_cli.continual.evaluation import evaluate_task
from ser_cli.continual.learner import Learner
from ser_cli.continual.loop import ContinualTrainer
from ser_cli.data.scenario import ClassIncrementalScenario
from ser_cli.models.normalize import Normalizer
from tests.continual_data import tiny_settings, tiny_stream


@pytest.mark.parametrize("seed", [0, 3])
def test_split_and_pixels_are_ser_scenarios(tiny_synth: Path, seed: int) -> None:
    sc = ClassIncrementalScenario(tiny_synth, None, n_tasks=2, classes_per_task=2, batch_size=4, seed=seed)
    (train_x, train_y), (test_x, test_y) = read_split(tiny_synth, "train"), read_split(tiny_synth, "test")
    for task in range(2):
        rows = stream_rows(train_y, 2, task, seed)
        assert np.array_equal(rows, sc.stream_order([task], 0))
        streamed = list(sc.train_loader([task]))
        assert torch.equal(torch.cat([b[0] for b in streamed]), train_x[rows])
        assert torch.equal(torch.cat([b[2] for b in streamed]), torch.from_numpy(train_y[rows]))
        held_out = torch.cat([b[0] for b in sc.test_loader(task)])
        assert torch.equal(held_out, test_x[eval_rows(test_y, 2, task)])


@pytest.mark.parametrize("seed", [0, 1])
def test_initial_weights_are_ser_trains(seed: int) -> None:
    trainer = ContinualTrainer(tiny_settings(seed=seed, method="derpp"), tiny_stream())
    ours = initial_model("resnet18_reduced", 6, seed).state_dict()
    theirs = trainer.learner.classifier.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_accuracy_is_counted_as_ser_counts() -> None:
    stream = tiny_stream(n_tasks=3, classes_per_task=2)
    normalize = Normalizer("cpu")
    # A nearest-template classifier with noisy templates: partly right, so the counts are neither all 0 nor 100.
    x, y = normalize(stream.train[0]).flatten(1), stream.train[2]  # (N, D), (N,)
    templates = torch.stack([x[y == c].mean(0) for c in range(6)]) - x.mean(0)  # (6, D)
    noisy = templates + 12 * templates.std() * torch.randn(templates.shape, generator=torch.Generator().manual_seed(0))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(x.shape[1], 6, bias=False)).eval()
    model[1].weight.data.copy_(noisy)
    learner = Learner(model, normalize)
    tests = []
    for task in range(3):
        batches = list(stream.test_loader(task))
        tests.append((normalize(torch.cat([b[0] for b in batches])), torch.cat([b[2] for b in batches])))
    accuracies = set()
    for row in range(3):
        class_il, task_il = accuracy_row(model, tests, row, classes_per_task=2, batch_size=5)
        for task in range(row + 1):
            ser = evaluate_task(learner, stream.test_loader(task), task, 2, n_logits=(row + 1) * 2)
            assert class_il[task] == pytest.approx(ser.class_il, abs=1e-9)
            assert task_il[task] == pytest.approx(ser.task_il, abs=1e-9)
            accuracies.update([class_il[task], task_il[task]])
    assert len(accuracies) > 2


def test_summary_is_mean_and_sample_std_of_paired_runs() -> None:
    records = [{"method": "derpp", "seed": s, "avalanche": {"class_il": a}, "ser": {"class_il": b}}
               for s, a, b in [(0, 10.0, 20.0), (1, 20.0, 20.0), (2, 30.0, 26.0)]]
    summary = summarize(records)["derpp"]
    assert summary["avalanche"] == pytest.approx((20.0, 10.0))
    assert summary["ser"] == pytest.approx((22.0, np.std([20, 20, 26], ddof=1)))
    std = np.std([-10, 0, 4], ddof=1)
    assert summary["avalanche_minus_ser"] == pytest.approx((-2.0, std))
    half = 4.302652729911275 * std / np.sqrt(3)  # t_{0.975, 2 dof}
    assert summary["avalanche_minus_ser_ci95"] == pytest.approx((-2.0 - half, -2.0 + half))
    assert "minus_unchanged" not in summary


def test_an_ablation_variant_is_paired_with_the_unchanged_method_of_the_same_seed() -> None:
    records = [{"method": "er_ace", "variant": v, "seed": s, "avalanche": {"class_il": a}, "ser": {"class_il": 0.0}}
               for v, s, a in [("avalanche", 0, 30.0), ("avalanche", 1, 20.0), ("reservoir", 1, 14.0),
                               ("reservoir", 0, 25.0)]]
    summary = summarize(records)
    assert list(summary) == ["er_ace", "er_ace+reservoir"]
    assert summary["er_ace+reservoir"]["minus_unchanged"] == pytest.approx((-5.5, np.std([-5, -6], ddof=1)))
