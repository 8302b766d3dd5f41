"""The ser side of the Avalanche comparison: the settings, data split, stream order, initial weights and accuracy
counting of a `ser train` run, reproduced from its files so that Avalanche is fed exactly what ser saw."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import yaml
from torch import Tensor, nn

from ser_cli.continual.seeds import seed_run
from ser_cli.models.normalize import Normalizer
from ser_cli.models.registry import build_backbone

METHODS = {"derpp": "DER++", "er_ace": "ER-ACE"}
RUNS_DIR = Path("experiments/out/protocol/runs")  # ser's runs: `{method}_rand_s{seed}` (read only)


@dataclass(frozen=True)
class Protocol:
    """The settings of the ser run both implementations share (from its `params.yaml`)."""

    backbone: str
    n_tasks: int
    classes_per_task: int
    epochs: int
    batch_size: int
    minibatch_size: int
    buffer_size: int
    lr: float
    momentum: float
    weight_decay: float
    alpha: float
    beta: float

    @property
    def n_classes(self) -> int:
        return self.n_tasks * self.classes_per_task



def ser_run(runs_dir: Path, method: str, seed: int) -> Path:
    """The folder of ser's plain run with a random classifier start."""
    return runs_dir / f"{method}_rand_s{seed}"


def read_protocol(run: Path, method: str, seed: int) -> tuple[Protocol, str]:
    """The shared settings and the data fingerprint of a ser run, checked to be the plain random-start run."""
    info = json.loads((run / "run.json").read_text())
    train = yaml.safe_load((run / "params.yaml").read_text())["train"]
    expected = {"method": method, "ser": False, "seed": seed, "classifier_init": "random"}
    found = {k: info[k] for k in expected}
    if found != expected or train["precision"] not in ("auto", "fp32"):
        raise SystemExit(f"{run}: expected a plain fp32 run {expected}, found {found}")
    if train["epochs"] != 1:
        raise SystemExit(f"{run}: train.epochs={train['epochs']}; this comparison streams each task once")
    return Protocol(**{f: train[f] for f in Protocol.__dataclass_fields__}), info["data_fingerprint"]


def ser_result(run: Path) -> dict[str, Any]:
    """ser's final class-IL / task-IL accuracy, its class-IL matrix and training time."""
    metrics = json.loads((run / "metrics.json").read_text())
    matrix = json.loads((run / "accuracy_matrix.json").read_text())
    return {"class_il": metrics["class_il_final_avg_acc"], "task_il": metrics["task_il_final_avg_acc"],
            "class_il_matrix": matrix["class_il"], "train_seconds": metrics["train_seconds"]}


# ------------------------------------------------------------------------------------- data, split, weights


def stream_rows(labels: np.ndarray, classes_per_task: int, task: int, seed: int) -> np.ndarray:
    """Training rows of `task` in ser's stream order for epoch 0 (`ClassIncrementalScenario.stream_order`)."""
    rows = np.flatnonzero(labels // classes_per_task == task)  # file order
    return rows[np.random.default_rng([seed, task, 0]).permutation(len(rows))]


def eval_rows(labels: np.ndarray, classes_per_task: int, task: int) -> np.ndarray:
    """Test rows of `task` in file order (`ClassIncrementalScenario.task_rows`)."""
    return np.flatnonzero(labels // classes_per_task == task)


def read_split(path: Path, split: str) -> tuple[Tensor, np.ndarray]:
    """All images uint8 (N, 3, H, W) and labels (N,) of a raw-storage data file's split."""
    with h5py.File(path, "r", locking=False) as h5:
        if h5.attrs.get("storage", "raw") != "raw":
            raise SystemExit(f"{path}: PNG-encoded storage; this script reads raw files only")
        images = torch.from_numpy(h5[split]["images"][:]).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)
        return images, h5[split]["labels"][:]


def data_fingerprint(path: Path) -> str:
    with h5py.File(path, "r", locking=False) as h5:
        return str(h5.attrs["fingerprint"])


def initial_model(backbone: str, n_classes: int, seed: int) -> nn.Module:
    """The classifier `ser train` starts from with `classifier_init=random` (seed first, then build)."""
    seed_run(seed)
    return build_backbone(backbone, n_classes)


# ---------------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def accuracy_row(model: nn.Module, tests: list[tuple[Tensor, Tensor]], row: int, classes_per_task: int,
                 batch_size: int = 64) -> tuple[list[float], list[float]]:
    """Class-IL and task-IL accuracy (percent) on tasks 0..row after training task `row`, counted independently.

    Args:
        tests: Per task, normalised test images (N, 3, H, W) and labels (N,).

    Returns:
        (class-IL, task-IL) lists of row + 1 accuracies: argmax over the (row + 1) * classes_per_task seen classes,
        and argmax within the label's own block of classes_per_task logits.
    """
    was_training = model.training
    model.eval()
    class_il, task_il = [], []
    for task in range(row + 1):
        x, y = tests[task]
        logits = torch.cat([model(chunk) for chunk in x.split(batch_size)])  # (N, n_classes)
        seen = logits[:, : (row + 1) * classes_per_task].argmax(1)
        block = slice(task * classes_per_task, (task + 1) * classes_per_task)
        own = logits[:, block].argmax(1) + task * classes_per_task
        class_il.append(100.0 * (seen == y).double().mean().item())
        task_il.append(100.0 * (own == y).double().mean().item())
    model.train(was_training)
    return class_il, task_il



@dataclass
class TaskData:
    """One task: normalised training images in stream order, their labels, and the task's test set."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor


def task_data(data: Path, proto: Protocol, seed: int) -> list[TaskData]:
    """Every task of the scenario, normalised with ser's `Normalizer` on the CPU."""
    normalize = Normalizer("cpu")
    (train_img, train_lab), (test_img, test_lab) = read_split(data, "train"), read_split(data, "test")
    tasks = []
    for t in range(proto.n_tasks):
        tr, te = stream_rows(train_lab, proto.classes_per_task, t, seed), eval_rows(test_lab, proto.classes_per_task, t)
        tasks.append(TaskData(normalize(train_img[tr]), torch.from_numpy(train_lab[tr]),
                              normalize(test_img[te]), torch.from_numpy(test_lab[te])))
    return tasks

