"""Kill matrix (issue #12): each resumable command is SIGKILLed at 3 seeded points, rerun, and compared bit for bit
with an uninterrupted run.

A point is "after the N-th unit of work": import blocks written (`_write_block`, 2 rows each here), optimiser steps of
`ser pretrain-saliency` (`SaliencyTrainer.train_epoch` items), committed batches of `ser precompute`
(`MapsWorkFile.write`) and training steps of `ser train` (`ContinualTrainer._step`). N is drawn from a seeded
`random.Random` over the command's unit count, and the process kills itself right there (`tests.faults
kill-after-calls`), so every point is the same on every machine and no test waits on a timer. The reference, the
killed run and the rerun all run in forked children of the test process (`faults.run_forked`): no interpreter start
or torch import per run. Equal means: the same file names, no `.partial` or checkpoint left over, equal weight
tensors, equal arrays and attributes in every HDF5 dataset, equal accuracy matrices and equal metrics (measurements
aside).
"""

from __future__ import annotations

import csv
import filecmp
import json
import math
import random
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

from ser_cli.runs.saliency_file import save_saliency_checkpoint
from tests import faults
from tests.conftest import make_synth, seeded_saliency_net
from tests.fixtures_formats import write_salicon

POINTS = 3
SEED = 12  # of the kill points; change it to draw another matrix
SALICON_ROWS = {"train": 9, "val": 5}
IMPORT_BLOCK = 2  # rows per import block (the shipped 32 would make this dataset one block per split)
TRAIN_CLASSES, TRAIN_PER_CLASS, TRAIN_TASKS, BATCH = 4, 8, 2, 4
ENV = {"SOURCE_DATE_EPOCH": "0"}  # the import records its creation time; fix it so attributes compare


@dataclass(frozen=True)
class Command:
    """One command of the matrix: what it counts, how many it counts in a full run, and how to run it.

    Attributes:
        unit: Dotted name of the function whose returns (items, for a generator) are the kill points.
        units: How many there are in an uninterrupted run.
        faults: Faults every run of the command gets (the killed one also gets `kill-after-calls`).
        args: `ser` arguments, from the inputs and the output path.
        output: The output path (a file or a run folder) inside a run's own folder.
        compare: Asserts that two outputs are equal.
        kept: How many units a kill after the N-th one leaves committed, which the rerun must not redo (a rerun
            that started over would pass every comparison).
    """

    unit: str
    units: int
    args: Callable[[dict[str, Path], Path], list[str]]
    output: str
    compare: Callable[[Path, Path], None]
    kept: Callable[[int], int]
    faults: tuple[str, ...] = ()


# ------------------------------------------------------------------------------------------------ comparisons


def _same_tree(a: Any, b: Any, where: str = "") -> None:
    """Nested dicts / lists / tensors / arrays equal bit for bit (NaN equal to NaN), measurements aside."""
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            if not _measured(str(key)):
                _same_tree(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same_tree(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where, strict=True)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b, where


def _h5_content(path: Path) -> dict[str, Any]:
    """Every attribute and dataset of an HDF5 file, by name (variable-length rows as a list of arrays)."""
    content: dict[str, Any] = {}
    with h5py.File(path, "r") as h5:
        content["/attrs"] = {k: _plain(v) for k, v in h5.attrs.items()}

        def visit(name: str, obj: h5py.HLObject) -> None:
            content[f"{name}/attrs"] = {k: _plain(v) for k, v in obj.attrs.items()}
            if isinstance(obj, h5py.Dataset):
                data = obj[()]
                content[name] = list(data) if data.dtype.kind == "O" else data

        h5.visititems(visit)
    return content


def _plain(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray | np.generic) else value


def _json(path: Path, drop: Callable[[str], bool] = lambda key: False) -> dict[str, Any]:
    return {k: v for k, v in json.loads(path.read_text()).items() if not drop(k)}


def _measured(key: str) -> bool:
    """Measurements of the machine rather than results of the run: times, rates, peak memory."""
    return "seconds" in key or "per_second" in key or "peak_memory" in key


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return [{k: v for k, v in row.items() if not _measured(k)} for row in csv.DictReader(f)]


def _weights(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _same_import(ref: Path, out: Path) -> None:
    _same_tree(_h5_content(ref), _h5_content(out))


def _same_pretrain(ref: Path, out: Path) -> None:
    _same_tree(_weights(ref / "model.pt"), _weights(out / "model.pt"))
    _same_tree(_json(ref / "metrics.json", _measured), _json(out / "metrics.json", _measured))
    _same_tree(_csv_rows(ref / "train_log.csv"), _csv_rows(out / "train_log.csv"))


def _same_precompute(ref: Path, out: Path) -> None:
    _same_tree(_h5_content(ref), _h5_content(out))
    assert filecmp.cmp(ref, out, shallow=False)  # the shipped contract: the same bytes however the work was done
    metrics = [_json(p.with_suffix(".metrics.json"), _measured) for p in (ref, out)]
    _same_tree(*metrics)


def _same_train(ref: Path, out: Path) -> None:
    _same_tree(_weights(ref / "model.pt"), _weights(out / "model.pt"))
    _same_tree(_json(ref / "accuracy_matrix.json"), _json(out / "accuracy_matrix.json"))
    _same_tree(_json(ref / "metrics.json", _measured), _json(out / "metrics.json", _measured))
    _same_tree(_csv_rows(ref / "train_log.csv"), _csv_rows(out / "train_log.csv"))


# ------------------------------------------------------------------------------------------------ the commands


def _sets(**values: object) -> list[str]:
    return [x for key, value in values.items() for x in ("--set", f"{key.replace('__', '.')}={value}")]


COMMANDS = {
    "import": Command(
        unit="stages.import_data._write_block",
        units=sum(math.ceil(n / IMPORT_BLOCK) for n in SALICON_ROWS.values()),
        faults=("set-attr", "stages.import_data.BLOCK_ROWS", str(IMPORT_BLOCK)),
        args=lambda i, out: ["data", "import", "salicon", str(i["salicon"]), "--out", str(out), "--workers", "0",
                             *_sets(data__height=32, data__width=48)],
        output="data.h5",
        compare=_same_import,
        kept=lambda n: n,  # a block is flushed before `_write_block` returns
    ),
    "pretrain": Command(  # conftest's pretraining file: 22 train images / batch 4 = 6 steps, 2 epochs
        unit="ser_cli.saliency.saliency_trainer.SaliencyTrainer.train_epoch",
        units=12,
        args=lambda i, out: ["pretrain-saliency", "--data", str(i["pretrain_data"]), "--out", str(out), "--device",
                             "cpu", *_sets(saliency__epochs=2, saliency__batch_size=4, saliency__checkpoint_every=2,
                                           saliency__lr=0.05)],
        output="run",
        compare=_same_pretrain,
        kept=lambda n: n - n % 2,  # the loop checkpoints every 2 steps before it asks for the next one
    ),
    "precompute": Command(  # conftest's tiny file: 24 + 12 rows / batch 4
        unit="ser_cli.data.maps_work.MapsWorkFile.write",
        units=9,
        args=lambda i, out: ["precompute", "--model", str(i["saliency"]), "--data", str(i["synth"]), "--out",
                             str(out), "--device", "cpu", *_sets(precompute__batch_size=4)],
        output="maps.h5",
        compare=_same_precompute,
        kept=lambda n: n,  # `write` commits its batch
    ),
    "train": Command(  # DER++ with SER: both networks, both optimisers, the buffer with its logits
        unit="ser_cli.continual.loop.ContinualTrainer._step",
        units=TRAIN_CLASSES * TRAIN_PER_CLASS // BATCH,
        args=lambda i, out: ["train", "--data", str(i["train_data"]), "--out", str(out), "--device", "cpu",
                             "--method", "derpp", "--ser", "--saliency-model", str(i["saliency"]),
                             *_sets(train__n_tasks=TRAIN_TASKS, train__classes_per_task=TRAIN_CLASSES // TRAIN_TASKS,
                                    train__buffer_size=8, train__batch_size=BATCH, train__minibatch_size=BATCH,
                                    train__checkpoint_every=3)],
        output="run",
        compare=_same_train,
        kept=lambda n: max(c for c in (0, 3, 4, 6) if c < n),  # checkpoints at steps 3, 6 and the task end 4, each
        # written after `_step` returns
    ),
}


def kill_points(name: str) -> list[int]:
    """`POINTS` distinct units of `name`, drawn from a generator seeded by `SEED` and the command's name."""
    return sorted(random.Random(f"{SEED}/{name}").sample(range(1, COMMANDS[name].units + 1), POINTS))


MATRIX = [pytest.param(name, n, id=f"{name}-after-{n}") for name in COMMANDS for n in kill_points(name)]


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module", autouse=True)
def _warm_imports() -> None:
    """Import here, once, what every forked run would import again: the stages, torch's compiler stack (imported by
    the first optimiser made) and pyplot, most of the cost of a tiny run."""
    import matplotlib.pyplot  # noqa: F401

    import stages.import_data
    import stages.precompute
    import stages.pretrain_saliency
    import stages.train  # noqa: F401

    torch.optim.SGD([torch.zeros(1, requires_grad=True)])


@pytest.fixture(scope="module")
def inputs(tiny_synth: Path, tiny_synth_pretrain: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The inputs of every command: data files, a saliency model with moved BN statistics, a SALICON folder."""
    root = tmp_path_factory.mktemp("inputs")
    net = seeded_saliency_net()
    save_saliency_checkpoint(root / "saliency.pt", net, "0" * 64, {})
    sizes = {split: [(40 + i % 3, 56 + 2 * (i % 2)) for i in range(n)] for split, n in SALICON_ROWS.items()}
    return {
        "synth": tiny_synth,
        "pretrain_data": tiny_synth_pretrain,
        "train_data": make_synth(root / "train.h5", n_classes=TRAIN_CLASSES, train_per_class=TRAIN_PER_CLASS),
        "saliency": root / "saliency.pt",
        "salicon": write_salicon(root / "salicon", sizes_by_split=sizes),
    }


def _run(name: str, inputs: dict[str, Path], folder: Path, *kill: str) -> tuple[int, Path, str]:
    """Run command `name` with its faults (and `kill`) into `folder`; returns (status, output path, log)."""
    command = COMMANDS[name]
    folder.mkdir(parents=True, exist_ok=True)
    out, log = folder / command.output, folder.parent / f"{folder.name}.log"
    argv = [*command.faults, *kill, "-q", *command.args(inputs, out)]
    code = faults.run_forked(argv, cwd=folder.parent, log=log, **ENV)
    return code, out, log.read_text()


@pytest.fixture(scope="module")
def reference(inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """The uninterrupted output of a command, made on first use; it checks the command's unit count."""
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            folder, command = tmp_path_factory.mktemp(f"ref-{name}"), COMMANDS[name]
            units = folder.parent / f"{folder.name}.units"
            code, out, log = _run(name, inputs, folder, "count-calls", command.unit, str(units))
            assert code == 0, log
            assert _lines(units) == command.units and _leftovers(folder) == []
            made[name] = out
        return made[name]

    return get


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.suffix == ".partial"
                  or p.name == "checkpoint.pt")


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ------------------------------------------------------------------------------------------------ the matrix


@pytest.mark.slow
@pytest.mark.parametrize("name, point", MATRIX)
def test_sigkill_then_rerun_equals_uninterrupted(name: str, point: int, inputs: dict[str, Path],
                                                 reference: Callable[[str], Path], tmp_path: Path) -> None:
    ref, folder = reference(name), tmp_path / "run"
    killed, out, log = _run(name, inputs, folder, "kill-after-calls", COMMANDS[name].unit, str(point))
    assert killed == -signal.SIGKILL, log
    assert not out.exists() or out.is_dir() and not (out / "model.pt").exists(), "the kill came after the end"
    redone = tmp_path / "redone.txt"
    code, out, log = _run(name, inputs, folder, "count-calls", COMMANDS[name].unit, str(redone))
    assert code == 0, log
    assert _lines(redone) == COMMANDS[name].units - COMMANDS[name].kept(point), "the rerun did not resume"
    assert _leftovers(folder) == []
    assert _listing(folder) == _listing(ref.parent)
    COMMANDS[name].compare(ref, out)
