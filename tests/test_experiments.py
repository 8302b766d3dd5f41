"""An experiment grid run by `ser sweep GRID --executor local` (the grid parsing is tested in test_sweep_exec): every
(run, seed) trained and evaluated, a paired report at the end, a rerun that finds everything complete and redoes
nothing, and the experiments' tools (task-end losses, snapshot) on its folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from experiments.snapshot import snapshot
from experiments.task_end_losses import summarize
from ser_cli.models.saliency_net import SaliencyNet
from ser_cli.runs.saliency_file import save_saliency_checkpoint
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


@pytest.mark.slow
def test_a_tiny_grid_runs_reports_pairs_and_resumes_as_a_no_op(tmp_path: Path) -> None:
    grid = _grid(tmp_path)
    # run from the test's folder: no checkout params.yaml (it names a saliency model only `make demo` creates)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "ser_cli", "sweep", str(grid), "--executor", "local", "--jobs", "2"]
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
