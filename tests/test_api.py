"""The Python API (`ser_cli.api`): a hand-written loop gives `ser train`'s numbers, save/load continues exactly,
the example runs, and the TensorBoard / DVCLive loggers write what was logged (read back with their own readers)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ser_cli.api import SERLearner
from ser_cli.continual.loggers import TrainLoggers, check_loggers
from ser_cli.continual.loop import ContinualTrainer
from ser_cli.runtime.errors import UserError
from stages.train import task_end_line
from tests.continual_data import tiny_settings, tiny_stream

ROOT = Path(__file__).resolve().parents[1]


def _hand_loop(learner: SERLearner, stream, tasks: range) -> list[list[float]]:
    """The loop a user writes: the stream's batches, observe, evaluate on every test image after each task."""
    test_images, test_maps, test_labels = stream.test
    rows = []
    for task in tasks:
        learner.begin_task(task)
        for images, maps, labels, _ in stream.train_loader([task], 0):
            learner.observe(images, labels, maps)
        learner.end_task(task)
        per_task = learner.evaluate(test_images, test_labels, test_maps)["per_task"]
        rows.append([per_task[t + 1]["class_il"] for t in range(task + 1)])
    return rows


@pytest.mark.parametrize("ser", [False, True])
def test_hand_written_loop_gives_the_trainers_numbers(ser: bool) -> None:
    settings = tiny_settings(ser=ser)
    stream = tiny_stream()
    trained = ContinualTrainer(settings, stream, "cpu")
    result = trained.run()
    learner = SERLearner.from_config(settings.to_dict(), image_shape=stream.image_shape)
    rows = _hand_loop(learner, stream, range(settings.n_tasks))
    for task, row in enumerate(rows):
        assert row == result.class_il[task][: task + 1]
    for name, value in trained.learner.classifier.state_dict().items():
        assert torch.equal(value, learner.learner.classifier.state_dict()[name]), name


def test_saved_learner_continues_exactly(tmp_path: Path) -> None:
    stream = tiny_stream()
    settings = tiny_settings(ser=True)
    learner = SERLearner.from_config(settings, image_shape=stream.image_shape)
    _hand_loop(learner, stream, range(1))
    learner.save(tmp_path / "learner.pt")
    loaded = SERLearner.load(tmp_path / "learner.pt")
    assert (loaded.task, loaded.steps) == (learner.task, learner.steps)
    # the global RNG (the saliency decoder's dropout) is the caller's: give both copies the same
    torch.manual_seed(1)
    first = _hand_loop(learner, stream, range(1, 3))
    torch.manual_seed(1)
    again = _hand_loop(loaded, stream, range(1, 3))
    assert first == again


def test_observe_refuses_misuse() -> None:
    learner = SERLearner.from_config(tiny_settings(ser=True), image_shape=(3, 16, 24))
    images = torch.zeros(2, 3, 16, 24, dtype=torch.uint8)
    with pytest.raises(UserError, match="begin_task"):
        learner.observe(images, torch.tensor([0, 1]), torch.ones(2, 16, 24))
    learner.begin_task(0)
    with pytest.raises(UserError, match="maps"):
        learner.observe(images, torch.tensor([0, 1]))
    with pytest.raises(UserError, match="uint8"):
        learner.observe(images.float(), torch.tensor([0, 1]), torch.ones(2, 16, 24))


def test_example_runs(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "hand_written_loop.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("task 1/2: class-IL") and lines[1].startswith("task 2/2: class-IL")
    assert "task-IL" in lines[1] and (tmp_path / "learner.pt").is_file()


def _tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _dvclive_curve(folder: Path, name: str) -> list[tuple[int, float]]:
    with open(folder / "plots" / "metrics" / f"{name}.tsv") as f:
        return [(int(row["step"]), float(row[name.split("/")[-1]])) for row in csv.DictReader(f, delimiter="\t")]


def test_loggers_write_what_was_logged(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    pytest.importorskip("dvclive")
    # In a child process: DVCLive starts a Studio-posting thread that never ends, and a thread left in this pytest
    # worker would make the fork-based kill tests that share it refuse to fork (tests/faults.run_forked).
    script = f"""
from pathlib import Path
from ser_cli.continual.loggers import TrainLoggers
losses = [{{"loss": 1.25, "stream_ce": 0.5}}, {{"loss": 0.75, "stream_ce": 0.25}}]
with TrainLoggers(["tensorboard", "dvclive"], Path({str(tmp_path)!r})) as log:
    for step, values in enumerate(losses, start=1):
        log.step(step, values)
    log.task_end(1, 2, class_il=62.5, task_il=87.5)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    tb = _tensorboard_scalars(tmp_path / "tensorboard")
    assert tb["train/loss"] == [(1, 1.25), (2, 0.75)]
    assert tb["eval/class_il"] == [(2, 62.5)] and tb["eval/task_il"] == [(2, 87.5)]
    assert _dvclive_curve(tmp_path / "dvclive", "train/stream_ce") == [(1, 0.5), (2, 0.25)]
    summary = json.loads((tmp_path / "dvclive" / "metrics.json").read_text())
    assert summary["eval"] == {"class_il": 62.5, "task_il": 87.5, "task": 1.0}
    assert "plots/metrics" in (tmp_path / "dvclive" / "dvc.yaml").read_text()


def test_no_loggers_by_default_writes_nothing(tmp_path: Path) -> None:
    log = TrainLoggers([], tmp_path)
    assert not log.active
    log.step(1, {"loss": 1.0})
    log.close()
    assert list(tmp_path.iterdir()) == []


def test_unknown_logger_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown logger 'wandb'; choose from tensorboard, dvclive"):
        check_loggers(["wandb"])


def test_ser_train_logs_its_losses(tiny_synth: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    pytest.importorskip("dvclive")
    out = tmp_path / "run"
    # a child process, for the reason given in test_loggers_write_what_was_logged
    result = subprocess.run([
        sys.executable, "-m", "ser_cli", "-q", "train", "--data", str(tiny_synth), "--out", str(out), "--device",
        "cpu", "--method", "er", "--set", "train.n_tasks=2", "--set", "train.classes_per_task=2",
        "--set", "train.buffer_size=8", "--set", "train.batch_size=4", "--set", "train.minibatch_size=4",
        "--set", "train.loggers=[tensorboard, dvclive]"], capture_output=True, text=True, cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    with open(out / "train_log.csv") as f:
        logged = [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]
    tb = _tensorboard_scalars(out / "tensorboard")
    assert [(s, round(v, 6)) for s, v in tb["train/loss"]] == logged  # the CSV rounds to 6 digits
    assert [(s, round(v, 6)) for s, v in _dvclive_curve(out / "dvclive", "train/loss")] == logged
    accuracy = json.loads((out / "accuracy_matrix.json").read_text())
    assert tb["eval/class_il"][-1] == (6, pytest.approx(sum(accuracy["class_il"][1]) / 2))


def test_task_end_line_numbers_from_one_and_gives_both_scenarios() -> None:
    assert task_end_line(0, 5, 81.25, 90.0) == "after task 1/5: average accuracy class-IL 81.2%, task-IL 90.0%"


def test_classifier_init_resolves_as_ser_train_does(tmp_path: Path) -> None:
    from ser_cli.models.saliency_net import SaliencyNet
    from ser_cli.runs.saliency_file import save_saliency_checkpoint

    torch.manual_seed(5)
    net = SaliencyNet("resnet18_reduced")
    save_saliency_checkpoint(tmp_path / "sal.pt", net, "0" * 64, {})
    config = {**tiny_settings().to_dict(), "classifier_init": "auto", "saliency_checkpoint": str(tmp_path / "sal.pt")}
    plain = SERLearner.from_config(config, image_shape=(3, 16, 24))  # plain + checkpoint: the saliency encoder
    encoder = net.encoder.state_dict()
    started = plain.learner.classifier.state_dict()
    shared = [k for k in encoder if k in started and not k.startswith(("head", "fc"))]
    assert shared and all(torch.equal(started[k], encoder[k]) for k in shared)
    ser = SERLearner.from_config({**config, "ser": True}, image_shape=(3, 16, 24))  # SER: random, as the authors
    assert ser.settings.classifier_init == "random"
    assert not all(torch.equal(ser.learner.classifier.state_dict()[k], encoder[k]) for k in shared)
    with pytest.raises(UserError, match="classifier_init=saliency: pass saliency_checkpoint"):
        SERLearner.from_config({**tiny_settings().to_dict(), "classifier_init": "saliency"}, image_shape=(3, 16, 24))
