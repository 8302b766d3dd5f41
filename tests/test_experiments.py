"""The experiment-grid runner (`python -m experiments.run`): every (run, seed) trained and evaluated, a paired
report at the end, and a rerun that finds everything complete and redoes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from experiments.run import load_grid
from experiments.snapshot import snapshot
from experiments.task_end_losses import summarize
from ser_cli.models.checkpoint import save_saliency_checkpoint
from ser_cli.models.saliency_net import SaliencyNet
from tests.conftest import make_synth

ROOT = Path(__file__).resolve().parents[1]


def _grid(tmp_path: Path) -> Path:
    data = make_synth(tmp_path / "d.h5")
    sal = tmp_path / "sal.pt"
    save_saliency_checkpoint(sal, SaliencyNet("resnet18_reduced"), "x", {})
    tiny = ["--set", "train.n_tasks=2", "--set", "train.classes_per_task=2", "--set", "train.buffer_size=8",
            "--set", "train.batch_size=4", "--set", "train.minibatch_size=4", "--set", "train.diagnostics_every=2",
            "--device", "cpu"]
    grid = {"out": str(tmp_path / "out"), "train": ["--data", str(data), *tiny],
            "evaluate": ["--data", str(data), "--device", "cpu", "--set", "evaluate.attacks=[]",
                         "--set", "evaluate.attack_images=4"],
            "seeds": [0, 1],
            "runs": {"er": ["--method", "er"], "er_ser": ["--method", "er", "--ser", "--saliency-model", str(sal)]}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def test_jobs_are_seed_major_with_per_run_options(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"out": "o", "train": ["--data", "a.h5"], "evaluate": ["--data", "a.h5"],
                                    "seeds": [0, 1], "runs": {"x": ["--method", "er"],
                                                              "y": {"train": ["--data", "b.h5"],
                                                                    "evaluate": ["--data", "b.h5"]}}}))
    _, jobs = load_grid(path)
    assert [j.tag for j in jobs] == ["x_s0", "y_s0", "x_s1", "y_s1"]
    train, evaluate = jobs[1].commands()
    assert train[-6:] == ["--data", "a.h5", "--data", "b.h5", "--seed", "0"]  # the later --data wins
    assert evaluate[-2:] == ["--data", "b.h5"] and str(jobs[1].run_dir) == "o/runs/y_s0"


def test_out_replaces_the_grids_folders_runs_included(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"out": "o", "runs_dir": "shared/runs", "runs": {"x": ["--method", "er"]}}))
    assert str(load_grid(path)[1][0].run_dir) == "shared/runs/x_s0"
    grid, (job,) = load_grid(path, Path("again"))
    assert grid["out"] == "again" and "runs_dir" not in grid
    assert (str(job.run_dir), str(job.eval_dir)) == ("again/runs/x_s0", "again/evals/x_s0")


@pytest.mark.slow
def test_a_tiny_grid_runs_reports_pairs_and_resumes_as_a_no_op(tmp_path: Path) -> None:
    grid = _grid(tmp_path)
    # run from the test's folder: no checkout params.yaml (it names a saliency model only `make demo` creates)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "experiments.run", str(grid), "--jobs", "2"]
    first = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "evals").iterdir()) == ["er_s0", "er_s1", "er_ser_s0", "er_ser_s1"]
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert [g["n_runs"] for g in summary["groups"]] == [2, 2]
    pair = summary["pairs"][0]["diffs"]["class_il_final_avg_acc"]
    ser = {g["label"]: g["metrics"]["class_il_final_avg_acc"]["values"] for g in summary["groups"]}
    assert pair["diffs"] == pytest.approx([a - b for a, b in zip(ser["er+ser"], ser["er"], strict=True)])
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and not {"report", "logs"} & set(p.parts)}
    # the rerun of one job (each job decides alone whether it is complete): nothing trained or evaluated again
    again = subprocess.run([*cmd, "--only", "er_ser", "--seeds", "1"], cwd=tmp_path, env=env, capture_output=True,
                           text=True)
    assert again.returncode == 0, again.stderr
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    losses = summarize(out / "runs", last=2)
    assert set(losses) == {"er", "er_ser"} and losses["er"]["n"] == 2
    assert losses["er_ser"]["diagnostics"] and not losses["er"]["diagnostics"]
    # a snapshot without the weights reports the same: ser compare on it, and the task-end losses from its logs
    kept = tmp_path / "kept"
    assert snapshot(out, kept) == ["er_s0", "er_s1", "er_ser_s0", "er_ser_s1"]
    assert not list(kept.rglob("*.pt"))
    kept_evals = map(str, sorted((kept / "evals").iterdir()))
    again = subprocess.run([sys.executable, "-m", "ser_cli", "-q", "compare", *kept_evals, "--out",
                            str(tmp_path / "report2"), "--pairs", "--json"], cwd=tmp_path, env=env,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    kept_summary = json.loads((tmp_path / "report2" / "summary.json").read_text())
    assert [g["metrics"] for g in kept_summary["groups"]] == [g["metrics"] for g in summary["groups"]]
    assert summarize(kept / "runs", last=2) == losses
