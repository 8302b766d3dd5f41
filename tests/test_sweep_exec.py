"""`ser sweep --executor local|slurm` (submitit jobs): grid files and `set:` files as points, a 2-point grid on
submitit's local executor (real processes) with one point killed mid-run and resumed bit-exact by the rerun, the
executor in each run's provenance, and the SLURM submission (one job array) against a stand-in `sbatch`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from ser_cli.cli.app import app
from ser_cli.runtime.errors import UserError
from ser_cli.sweep import load_sweep
from ser_cli.sweep_exec import executor_parameters, load, run_sweep
from ser_cli.sweep_grid import grid_points
from ser_cli.sweep_pipeline import pipeline_points
from tests.conftest import make_synth

ROOT = Path(__file__).resolve().parents[1]
STEP = "ser_cli.continual.loop.ContinualTrainer._step"


def _write(path: Path, spec: object) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_grid_points_are_seed_major_with_per_run_options_and_out_replaces_the_folders(tmp_path: Path) -> None:
    spec = {"out": "o", "train": ["--data", "a.h5"], "evaluate": ["--data", "a.h5"], "seeds": [0, 1],
            "contrasts": {"primary": []},  # the grid's stated analysis: allowed, not read
            "runs": {"x": ["--method", "er"], "y": {"train": ["--data", "b.h5"], "evaluate": ["--data", "b.h5"]}}}
    out, points = grid_points(spec, Path("g.yaml"))
    assert [p.name for p in points] == ["x_s0", "y_s0", "x_s1", "y_s1"] and out == Path("o")
    train, evaluate = points[1].commands
    assert train == ("-q", "train", "--out", "o/runs/y_s0", "--data", "a.h5", "--data", "b.h5", "--seed", "0")
    assert evaluate == ("-q", "evaluate", "--run", "o/runs/y_s0", "--out", "o/evals/y_s0", "--data", "a.h5",
                        "--data", "b.h5")  # the later --data wins
    assert points[1].evals == (Path("o/evals/y_s0"),)
    shared = {**spec, "runs_dir": "shared/runs"}
    assert grid_points(shared, Path("g.yaml"))[1][0].commands[0][3] == "shared/runs/x_s0"
    out, points = grid_points(shared, Path("g.yaml"), Path("again"))
    assert points[0].outputs == (Path("again/runs/x_s0"), Path("again/evals/x_s0"))


PIPELINE = {"stages": {
    "data": {"cmd": "ser data synth --out d.h5", "params": ["data.synth"], "outs": ["d.h5"]},
    "train": {"matrix": {"method": ["er", "derpp"]}, "cmd": "ser -q train --data d.h5 --out runs/${item.method} "
              "--method ${item.method} --device cpu", "deps": ["d.h5"], "params": ["train"],
              "outs": ["runs/${item.method}"]},
    "evaluate": {"matrix": {"method": ["er", "derpp"]},
                 "cmd": "ser -q evaluate --run=runs/${item.method} --data d.h5 --out evals/${item.method}",
                 "deps": ["runs/${item.method}", "d.h5"], "params": ["evaluate"]},
}}


def test_a_set_sweep_runs_the_pipelines_train_and_evaluate_with_its_overrides(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "dvc.yaml", PIPELINE)
    (tmp_path / "d.h5").touch()
    exps = load_sweep(_write(tmp_path / "s.yaml", {"name": "b", "set": {"train.buffer_size": [8, 16]}}))
    points = pipeline_points(exps, Path("sw"), tmp_path)
    assert [p.name for p in points] == ["b-buffer_size8", "b-buffer_size16"]
    assert points[1].commands == (
        ("-q", "train", "--data", "d.h5", "--out", "sw/b-buffer_size16/runs/er", "--method", "er", "--device", "cpu",
         "--set", "train.buffer_size=16"),
        ("-q", "train", "--data", "d.h5", "--out", "sw/b-buffer_size16/runs/derpp", "--method", "derpp", "--device",
         "cpu", "--set", "train.buffer_size=16"),
        ("-q", "evaluate", "--run=sw/b-buffer_size16/runs/er", "--data", "d.h5", "--out",
         "sw/b-buffer_size16/evals/er", "--set", "train.buffer_size=16"),
        ("-q", "evaluate", "--run=sw/b-buffer_size16/runs/derpp", "--data", "d.h5", "--out",
         "sw/b-buffer_size16/evals/derpp", "--set", "train.buffer_size=16"))
    assert points[0].evals == (Path("sw/b-buffer_size8/evals/er"), Path("sw/b-buffer_size8/evals/derpp"))
    upstream = load_sweep(_write(tmp_path / "u.yaml", {"name": "u", "set": {"data.synth.seed": [1]}}))
    with pytest.raises(UserError, match="data.synth.seed: not read by the train or evaluate stage"):
        pipeline_points(upstream, Path("sw"), tmp_path)
    (tmp_path / "d.h5").unlink()
    with pytest.raises(UserError, match=r"d.h5: an input of the train stage is missing"):
        pipeline_points(exps, Path("sw"), tmp_path)


def test_a_grid_file_on_dvcs_queue_is_one_line_exit_2(tmp_path: Path) -> None:
    grid = _write(tmp_path / "g.yaml", {"out": "o", "runs": {"x": ["--method", "er"]}})
    for argv in (["sweep", str(grid)], ["sweep", str(grid), "--executor", "pbs"]):
        result = CliRunner().invoke(app, argv)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "runs with --executor local or slurm" in CliRunner().invoke(app, ["sweep", str(grid)]).stderr


def test_slurm_submits_one_job_array_with_the_files_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No cluster here: stand-in `srun` and `sbatch` (which keeps the script it is given) on the PATH."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_ / "sbatch").write_text(f"#!/bin/sh\ncp \"$1\" {tmp_path}/sbatch.sh\necho 'Submitted batch job 4242'\n")
    for f in bin_.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    grid = _write(tmp_path / "g.yaml", {"out": "o", "seeds": [0, 1], "runs": {"x": ["--method", "er"]},
                                        "executor": {"partition": "gpu", "gpus_per_node": 1, "array_parallelism": 1,
                                                     "timeout_min": 90}})
    result = CliRunner().invoke(app, ["sweep", str(grid), "--executor", "slurm", "--option", "account=lab",
                                      "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["points"] == {"x_s0": "submitted 4242_0", "x_s1": "submitted 4242_1"}
    script = (tmp_path / "sbatch.sh").read_text()
    for line in ("--array=0-1%1", "--partition=gpu", "--gpus-per-node=1", "--account=lab", "--time=90",
                 "--signal=USR2@90", f"--output={tmp_path}/o/logs/submitit/%A_%a_0_log.out"):
        assert f"#SBATCH {line}\n" in script, script
    assert executor_parameters("slurm", {"mem_gb": 8, "slurm_qos": "low"}) == {
        "mem_gb": 8, "slurm_qos": "low", "timeout_min": 240}


def _same(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return a == b


def _grid(tmp_path: Path) -> Path:
    data = make_synth(tmp_path / "d.h5")
    tiny = ["--set", "train.n_tasks=2", "--set", "train.classes_per_task=2", "--set", "train.buffer_size=8",
            "--set", "train.batch_size=4", "--set", "train.minibatch_size=4", "--device", "cpu"]
    # two points of one configuration: `killed` is stopped mid-run, `whole` is its uninterrupted reference
    return _write(tmp_path / "grid.yaml", {
        "out": "out", "train": ["--data", str(data), *tiny, "--method", "er"],
        "evaluate": ["--data", str(data), "--device", "cpu", "--set", "evaluate.attacks=[]"],
        "seeds": [0], "runs": {"whole": [], "killed": []}})


@pytest.mark.slow
def test_a_killed_point_resumes_bit_exact_and_a_rerun_skips_finished_points(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the jobs import tests.faults
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    sweep = load(_grid(tmp_path))
    whole, killed = sweep.points
    # `ser train` of `killed` kills itself (SIGKILL) after step 4, a step into task 1 (task 0 ended at step 3)
    status, failed = run_sweep(sweep, [killed], "local", executor_parameters("local", {}),
                               launcher=("-m", "tests.faults", "kill-after-calls", STEP, "4"))
    assert status == {} and len(failed) == 1 and "killed_s0" in failed[0], failed
    run = tmp_path / "out" / "runs" / "killed_s0"
    assert (run / "checkpoint.pt").is_file() and not (run / "model.pt").exists()
    cmd = [sys.executable, "-m", "ser_cli", "sweep", "grid.yaml", "--executor", "local", "--jobs", "2", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["points"] == {"whole_s0": "finished", "killed_s0": "finished"}
    runs, evals = tmp_path / "out" / "runs", tmp_path / "out" / "evals"
    a, b = (torch.load(runs / f"{n}_s0" / "model.pt", weights_only=False) for n in ("whole", "killed"))
    assert _same(a["learner"], b["learner"])  # weights, buffer and optimiser state, bit for bit
    metrics = [json.loads((evals / f"{n}_s0" / "metrics.json").read_text()) for n in ("whole", "killed")]
    accuracy = [{k: v for k, v in m.items() if "acc" in k or "forgetting" in k} for m in metrics]
    assert accuracy[0] == accuracy[1] and accuracy[0]
    for name in ("whole", "killed"):  # the executor and submitit's job id, in the run and carried to its evaluation
        executor = json.loads((runs / f"{name}_s0" / "run.json").read_text())["executor"]
        assert executor["executor"] == "local" and executor["job_id"]
        assert json.loads((evals / f"{name}_s0" / "run.json").read_text())["train_executor"] == executor
    report = json.loads((tmp_path / "out" / "report" / "summary.json").read_text())
    assert [g["n_runs"] for g in report["groups"]] == [2]  # ser compare reads the sweep's evaluations
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*") if "report" not in p.parts}
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "whole_s0: already complete" in again.stderr and "killed_s0: already complete" in again.stderr
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # nothing submitted, trained or evaluated again


def test_a_command_outside_a_sweep_records_the_direct_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    from ser_cli.runtime.provenance import executor_info

    monkeypatch.delenv("SER_EXECUTOR", raising=False)
    monkeypatch.delenv("SER_JOB_ID", raising=False)
    assert executor_info() == {"executor": "direct", "job_id": None}
    monkeypatch.setenv("SER_EXECUTOR", "slurm")
    monkeypatch.setenv("SER_JOB_ID", "4242_1")
    assert executor_info() == {"executor": "slurm", "job_id": "4242_1"}
