"""`ser sweep` (a grid as queued DVC experiments) and `ser compare --exps` (their evaluations out of git), end to
end on a two-stage pipeline in a temporary repository, the same sweep as submitit jobs (`--executor local`) giving
the same numbers, plus the sweep file's rules."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ser_cli.cli.app import app
from ser_cli.sweep import load_sweep
from tests.conftest import make_synth

BIN = Path(sys.executable).parent


def _write(path: Path, spec: object) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False) if not isinstance(spec, str) else spec)
    return path


def test_the_grid_is_every_combination_with_names_and_dvc_overrides(tmp_path: Path) -> None:
    exps = load_sweep(_write(tmp_path / "s.yaml", {"name": "b", "set": {"train.seed": [0, 1],
                                                                        "train.mnp_blocks": [[1, 0, 1, 1, 1]]}}))
    assert [e.name for e in exps] == ["b-seed0-mnp_blocks1_0_1_1_1", "b-seed1-mnp_blocks1_0_1_1_1"]
    assert exps[1].command() == ["dvc", "exp", "run", "--queue", "-n", "b-seed1-mnp_blocks1_0_1_1_1",
                                 "-S", "++train.seed=1", "-S", "++train.mnp_blocks=[1, 0, 1, 1, 1]"]


@pytest.mark.parametrize(("spec", "words"), [
    ("name: [", "s.yaml: not valid YAML (line 1)"),
    ({"name": "x", "set": {"train.seed": [0]}, "jobs": 2}, "has the keys `name`, `set`, `out` and `executor` only"),
    ({"name": "a b", "set": {"train.seed": [0]}}, "name: letters, digits"),
    ({"name": "x", "set": {}}, "set: a mapping of parameter keys"),
    ({"name": "x", "set": {"seed": [0]}}, "'seed' is not a parameter key like train.seed"),
    ({"name": "x", "set": {"train.seed": []}}, "set.train.seed: a non-empty list"),
])
def test_a_bad_sweep_file_is_one_line_exit_2(tmp_path: Path, spec: object, words: str) -> None:
    result = CliRunner().invoke(app, ["sweep", str(_write(tmp_path / "s.yaml", spec)), "--dry"])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and words in lines[0], result.output


def test_compare_exps_outside_an_experiment_repository_is_one_line(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    result = CliRunner().invoke(app, ["compare", "--exps", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "no DVC experiments" in result.stderr, result.output


PIPELINE = {"stages": {
    "train": {"cmd": "ser -q train --data d.h5 --out runs/er --method er --device cpu",
              "deps": ["d.h5"], "params": ["train"], "outs": ["runs/er"]},
    "evaluate": {"cmd": "ser -q evaluate --run runs/er --data d.h5 --out evals/er --device cpu",
                 "deps": ["runs/er", "d.h5"], "params": ["evaluate"],
                 "outs": [{"evals/er/run.json": {"cache": False}}],
                 "metrics": [{"evals/er/metrics.json": {"cache": False}}],
                 "plots": [{"evals/er/plots/avg_accuracy.csv": {"cache": False}}]},
}}
PARAMS = {"train": {"n_tasks": 2, "classes_per_task": 2, "buffer_size": 8, "batch_size": 4, "minibatch_size": 4},
          "evaluate": {"attacks": [], "attack_images": 4}}


@pytest.mark.slow
def test_a_queued_sweep_runs_and_compare_groups_its_seeds(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    make_synth(repo / "d.h5")
    _write(repo / "dvc.yaml", PIPELINE)
    _write(repo / "params.yaml", PARAMS)
    _write(repo / "sweep.yaml", {"name": "seeds", "set": {"train.seed": [0, 1]}})
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}

    def run(*cmd: str) -> str:
        done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (cmd, done.stdout[-2000:], done.stderr[-2000:])
        return done.stdout

    for cmd in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "pipeline"]):
        run(*cmd)
    assert run(str(BIN / "ser"), "sweep", "sweep.yaml").splitlines()[:2] == ["seeds-seed0", "seeds-seed1"]
    run(str(BIN / "dvc"), "exp", "run", "--run-all")  # what `dvc queue start` does, here in the foreground
    summary = json.loads(run(str(BIN / "ser"), "compare", "--exps", "--out", "report", "--json"))
    (group,) = summary["groups"]  # the two seeds of one configuration, grouped
    assert group["n_runs"] == 2 and group["label"].startswith("er")
    values = group["metrics"]["class_il_final_avg_acc"]["values"]
    metrics = [json.loads(run("git", "show", f"{ref}:evals/er/metrics.json"))["class_il_final_avg_acc"]
               for ref in run("git", "for-each-ref", "--format=%(refname)", "refs/exps").split()
               if ref.count("/") == 4]
    assert sorted(values) == sorted(metrics)  # the numbers of the experiments' own commits
    again = json.loads(run(str(BIN / "ser"), "compare", "--exp", "seeds-seed1", "--out", "one", "--json"))
    assert [g["n_runs"] for g in again["groups"]] == [1]
    # the same sweep as submitit jobs on this machine: the same commands and overrides, the same numbers
    local = json.loads(run(str(BIN / "ser"), "sweep", "sweep.yaml", "--executor", "local", "--jobs", "2", "--json"))
    assert local["points"] == {"seeds-seed0": "finished", "seeds-seed1": "finished"}
    (group,) = json.loads((repo / local["report"] / "summary.json").read_text())["groups"]
    assert group["n_runs"] == 2 and sorted(group["metrics"]["class_il_final_avg_acc"]["values"]) == sorted(values)
    by_seed = {yaml.safe_load(run("git", "show", f"{ref}:params.yaml"))["train"]["seed"]:
               json.loads(run("git", "show", f"{ref}:evals/er/metrics.json"))
               for ref in run("git", "for-each-ref", "--format=%(refname)", "refs/exps").split() if ref.count("/") == 4}
    for seed, dvc_metrics in by_seed.items():  # seed by seed, every accuracy and forgetting figure
        ours = json.loads((repo / "sweeps" / "seeds" / f"seeds-seed{seed}" / "evals" / "er" / "metrics.json")
                          .read_text())
        assert {k: v for k, v in ours.items() if "acc" in k or "forgetting" in k} == {
            k: v for k, v in dvc_metrics.items() if "acc" in k or "forgetting" in k}
    shutil.rmtree(repo / ".dvc" / "tmp", ignore_errors=True)
