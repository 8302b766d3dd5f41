"""`ser train` end to end on a tiny SynthSal: outputs, determinism, resume after kill -9, bad input."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ser_cli.cli.app import app
from ser_cli.models.saliency_net import SaliencyNet
from ser_cli.runs.run_io import load_run
from ser_cli.runs.saliency_file import save_saliency_checkpoint
from tests import faults
from tests.conftest import make_synth

runner = CliRunner()
TINY = ["--set", "train.n_tasks=2", "--set", "train.classes_per_task=2", "--set", "train.buffer_size=16",
        "--set", "train.batch_size=4", "--set", "train.minibatch_size=4"]


def _train(data: Path, out: Path, *extra: str) -> object:
    return runner.invoke(app, ["-q", "train", "--data", str(data), "--out", str(out), "--device", "cpu",
                               *TINY, *extra])


def _one_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_plain_derpp_writes_every_output(tiny_synth: Path, tmp_path: Path) -> None:
    result = _train(tiny_synth, tmp_path / "run", "--method", "derpp")
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    for name in ("model.pt", "accuracy_matrix.json", "metrics.json", "run.json", "train_log.csv",
                 "avg_accuracy.png", "params.yaml"):
        assert (run / name).is_file(), name
    assert not (run / "checkpoint.pt").exists()
    matrix = json.loads((run / "accuracy_matrix.json").read_text())
    assert matrix["class_il"][0][1] is None  # task 1 not yet seen after task 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["buffer_bytes"] > 16 * 3 * 32 * 48  # 16 uint8 images at least
    assert metrics["steps"] == 6  # 24 training images / batch 4
    # the final average is the mean of the last row, as the metrics module computes it
    assert metrics["class_il_final_avg_acc"] == pytest.approx(sum(matrix["class_il"][1]) / 2)
    log_lines = (run / "train_log.csv").read_text().splitlines()
    assert log_lines[0].startswith("step,task,epoch") and len(log_lines) == 7


def test_ser_run_loads_and_evaluates(tiny_synth: Path, tmp_path: Path, saliency_ckpt: Path) -> None:
    out = tmp_path / "ser"
    result = _train(tiny_synth, out, "--method", "er_ace", "--ser", "--set",
                    f"train.saliency_checkpoint={saliency_ckpt}")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"saliency_cc", "saliency_kld", "saliency_sim"} <= set(metrics)
    run = load_run(out)
    x = torch.rand(2, 3, 32, 48, requires_grad=True)
    run.logits(x).sum().backward()
    assert x.grad.abs().sum() > 0
    maps = run.saliency_map(x.detach())
    assert torch.allclose(maps.sum(dim=(1, 2)), torch.ones(2), atol=1e-4)


def test_same_seed_same_result(tiny_synth: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert _train(tiny_synth, tmp_path / name, "--method", "er", "--seed", "3").exit_code == 0
    a = json.loads((tmp_path / "a" / "accuracy_matrix.json").read_text())
    b = json.loads((tmp_path / "b" / "accuracy_matrix.json").read_text())
    assert a == b
    wa, wb = (torch.load(tmp_path / n / "model.pt", weights_only=True)["learner"]["classifier"] for n in "ab")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_maps_of_another_data_file_are_refused(tiny_synth: Path, tmp_path: Path) -> None:
    other = make_synth(tmp_path / "other.h5", seed=5)
    maps = tmp_path / "maps.h5"
    made = runner.invoke(app, ["-q", "precompute", "--from-dataset", "--data", str(other), "--out", str(maps)])
    assert made.exit_code == 0, made.output
    result = _train(tiny_synth, tmp_path / "r", "--maps", str(maps))
    assert result.exit_code == 2 and "rerun ser precompute" in _one_line(result)


def test_saliency_checkpoint_of_another_architecture(tiny_synth: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "big.pt"
    save_saliency_checkpoint(ckpt, SaliencyNet("resnet18"), "x", {})
    result = _train(tiny_synth, tmp_path / "r", "--ser", "--set", f"train.saliency_checkpoint={ckpt}")
    assert result.exit_code == 2 and "pretrained with backbone 'resnet18'" in _one_line(result)


@pytest.mark.parametrize("extra, fragment", [
    (["--set", "train.n_tasks=3"], "has 4 classes, but train.n_tasks x train.classes_per_task = 3 x 2 = 6"),
    (["--set", "train.buffer_size=2"], "smaller than minibatch_size"),
    (["--method", "bogus"], "bogus"),
    (["--ser", "--set", "train.mnp=bogus"], "bogus"),
    (["--ser"], "train.saliency_checkpoint"),
])
def test_bad_input_exits_2_with_one_line(tiny_synth: Path, tmp_path: Path, saliency_ckpt: Path,
                                         extra: list[str], fragment: str) -> None:
    if "train.mnp=bogus" in extra:
        extra = [*extra, "--set", f"train.saliency_checkpoint={saliency_ckpt}"]
    result = _train(tiny_synth, tmp_path / "r", *extra)
    assert result.exit_code == 2, result.output
    assert fragment in _one_line(result)
    assert not (tmp_path / "r" / "model.pt").exists()


def test_nan_free_metrics_are_numbers(tiny_synth: Path, tmp_path: Path) -> None:
    assert _train(tiny_synth, tmp_path / "r", "--method", "sgd").exit_code == 0
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert all(isinstance(v, int | float) and math.isfinite(v) for v in metrics.values())


def test_joint_upper_bound_reports_final_accuracy_only(tiny_synth: Path, tmp_path: Path) -> None:
    assert _train(tiny_synth, tmp_path / "j", "--method", "joint").exit_code == 0
    metrics = json.loads((tmp_path / "j" / "metrics.json").read_text())
    matrix = json.loads((tmp_path / "j" / "accuracy_matrix.json").read_text())
    assert matrix["class_il"][0] == [None, None]  # one phase over all tasks: only the last row exists
    assert metrics["class_il_final_avg_acc"] == pytest.approx(sum(matrix["class_il"][1]) / 2)
    assert "class_il_forgetting" not in metrics


@pytest.mark.slow
def test_ctrl_c_checkpoints_says_where_exits_130_and_resumes_to_the_same_run(tmp_path: Path) -> None:
    data = make_synth(tmp_path / "d.h5", n_classes=6, train_per_class=8)
    args = ["-q", "train", "--data", str(data), "--device", "cpu", "--method", "derpp", "--set", "train.n_tasks=3",
            "--set", "train.classes_per_task=2", "--set", "train.buffer_size=16", "--set", "train.batch_size=4",
            "--set", "train.minibatch_size=4"]
    cmd = [sys.executable, "-m", "ser_cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full = subprocess.Popen([*cmd, "--out", str(tmp_path / "full")], env=env,  # the reference, meanwhile
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = tmp_path / "stopped"
    proc = subprocess.Popen([*faults.command("step-delay", 0.3, *args), "--out", str(run)], env=faults.env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "checkpoint.pt").exists() and time.time() < deadline:  # the end of task 0 (step 4)
        time.sleep(0.05)
    time.sleep(1.0)  # a few steps into task 1: no checkpoint would be written there without the interrupt
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert proc.returncode == 130 and len(lines) == 1, stderr
    assert "interrupted after step" in lines[0] and str(run / "checkpoint.pt") in lines[0]
    step = torch.load(run / "checkpoint.pt", weights_only=True)["trainer"]["position"]["step"]
    assert step > 4 and not (run / "model.pt").exists()  # the checkpoint is the interrupted step's, mid-task
    resumed = subprocess.run([*cmd, "--out", str(run)], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert full.wait(timeout=300) == 0
    reference = json.loads((tmp_path / "full" / "accuracy_matrix.json").read_text())
    assert json.loads((run / "accuracy_matrix.json").read_text()) == reference
