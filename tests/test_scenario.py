"""The class-incremental scenario: tasks by label order, a seeded stream, resumable from any batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ser_cli.data.scenario import ClassIncrementalScenario, fitting_splits, split_hint
from ser_cli.runtime.errors import UserError


def _scenario(path: Path, seed: int = 0) -> ClassIncrementalScenario:
    return ClassIncrementalScenario(path, None, n_tasks=2, classes_per_task=2, batch_size=4, seed=seed)


def test_tasks_hold_their_classes_only(tiny_synth: Path) -> None:
    sc = _scenario(tiny_synth)
    for task in range(2):
        labels = torch.cat([b[2] for b in sc.train_loader([task])])
        assert set(labels.tolist()) == set(sc.task_classes(task)) and len(labels) == 12
        test_labels = torch.cat([b[2] for b in sc.test_loader(task)])
        assert set(test_labels.tolist()) == set(sc.task_classes(task)) and len(test_labels) == 6


def test_stream_order_depends_on_seed_task_and_epoch_only(tiny_synth: Path) -> None:
    a, b = _scenario(tiny_synth), _scenario(tiny_synth)
    assert (a.stream_order([0], 0) == b.stream_order([0], 0)).all()
    assert not (a.stream_order([0], 0) == a.stream_order([0], 1)).all()
    assert not (a.stream_order([0], 0) == _scenario(tiny_synth, seed=1).stream_order([0], 0)).all()


def test_start_batch_skips_exactly_the_consumed_batches(tiny_synth: Path) -> None:
    sc = _scenario(tiny_synth)
    full = [b[3] for b in sc.train_loader([1])]
    rest = [b[3] for b in sc.train_loader([1], start_batch=2)]
    assert sc.n_batches([1]) == len(full) == 3
    assert all(torch.equal(x, y) for x, y in zip(full[2:], rest, strict=True))


def test_maps_are_targets_summing_to_one(tiny_synth: Path) -> None:
    images, maps, labels, rows = next(iter(_scenario(tiny_synth).train_loader([0])))
    assert images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 48)
    assert torch.allclose(maps.sum(dim=(1, 2)), torch.ones(len(maps)))


def test_task_split_must_match_the_classes(tiny_synth: Path) -> None:
    with pytest.raises(UserError, match=r"has 4 classes, but train.n_tasks x train.classes_per_task = 3 x 2 = 6"):
        ClassIncrementalScenario(tiny_synth, None, n_tasks=3, classes_per_task=2, batch_size=4, seed=0)


def test_split_mismatch_names_the_splits_that_fit(tiny_synth: Path) -> None:
    with pytest.raises(UserError, match=r"= 6; 4 classes: use n_tasks=2, classes_per_task=2 or n_tasks=4, "
                       r"classes_per_task=1 \(--set train.n_tasks=N"):
        ClassIncrementalScenario(tiny_synth, None, n_tasks=3, classes_per_task=2, batch_size=4, seed=0)


@pytest.mark.parametrize(("n_classes", "splits"), [
    (4, [(2, 2), (4, 1)]),
    (7, [(7, 1)]),
    (12, [(2, 6), (3, 4), (4, 3), (6, 2), (12, 1)]),
    (100, [(2, 50), (4, 25), (5, 20), (10, 10), (20, 5), (25, 4), (50, 2), (100, 1)]),
    (1, []),
])
def test_fitting_splits_multiply_to_the_classes(n_classes: int, splits: list[tuple[int, int]]) -> None:
    assert fitting_splits(n_classes) == splits
    assert split_hint(1) == "1 class: class-incremental learning needs at least 2 classes"
