"""`python -m benchmarks demo`: stage times from `dvc repro`'s output, per stage and per kind, and a real `dvc repro`
of a small pipeline in a fresh clone timed stage by stage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.demo_pipeline import kind_seconds, run_demo, stage_seconds

DVC = str(Path(sys.executable).parent / "dvc")


def test_a_stage_runs_from_its_line_to_the_next_and_the_last_to_the_end() -> None:
    lines = [(0.0, "Verifying data sources"), (1.5, "Running stage 'synth_cl':"), (2.0, "> ser data synth ..."),
             (16.5, "Running stage 'train@0':"), (70.0, "Running stage 'train@1':"), (100.0, "Updating lock file")]
    assert stage_seconds(lines, end=101.0) == {"synth_cl": 15.0, "train@0": 53.5, "train@1": 31.0}
    assert stage_seconds([(0.0, "Stage 'x' didn't change, skipping")], end=3.0) == {}


def test_stages_add_up_by_kind() -> None:
    stages = {"synth_pretrain": 7.0, "synth_cl": 8.0, "pretrain_saliency": 47.0, "train@0": 50.0, "train@1": 80.0,
              "evaluate@0": 30.0, "compare": 4.0}
    assert kind_seconds(stages) == {"synth": 15.0, "pretrain_saliency": 47.0, "train": 130.0, "evaluate": 30.0,
                                    "compare": 4.0}


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


@pytest.mark.slow
def test_a_real_pipeline_is_cloned_run_and_timed_per_stage(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "dvc.yaml").write_text(
        "stages:\n"
        "  first:\n    cmd: python -c \"import time; time.sleep(1.0); open('a.txt', 'w').write('a')\"\n"
        "    outs: [a.txt]\n"
        "  second:\n    cmd: python -c \"open('b.txt', 'w').write(open('a.txt').read())\"\n"
        "    deps: [a.txt]\n    outs: [b.txt]\n")
    _git(repo, "init", "-q")
    subprocess.run([DVC, "init", "-q"], cwd=repo, check=True, capture_output=True)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "pipeline")
    result = run_demo("HEAD", tmp_path / "work", repo=repo)
    stages = result["stages_s"]
    assert list(stages) == ["first", "second"]
    assert stages["first"] >= 1.0 and result["total_s"] >= stages["first"] + stages["second"]
    assert (Path(result["folder"]) / "b.txt").read_text() == "a"

    with pytest.raises(ValueError, match="--commits: 'nosuch' is not a commit of"):
        run_demo("nosuch", tmp_path / "work", repo=repo)

    (repo / "dvc.yaml").write_text("stages:\n  broken:\n    cmd: python -c \"raise SystemExit(3)\"\n")
    _git(repo, "commit", "-qam", "broken")
    with pytest.raises(RuntimeError, match="dvc repro at [0-9a-f]+ failed"):
        run_demo("HEAD", tmp_path / "work", repo=repo)
