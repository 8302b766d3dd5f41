"""The output lock under torchrun (`runtime.output_lock`): in a stage made for torchrun (precompute,
pretrain-saliency, evaluate) only rank 0 writes, so only rank 0 takes the lock, and a second job is refused at its
rank 0 naming the holder's pid; a stage that runs in one process refuses a launch of several.

Before, `locks_outputs` skipped the lock on every rank > 0 whatever the stage: under `torchrun --nproc_per_node=2
ser data synth` (or train, compare, ...) rank 1 wrote the same output as rank 0, unlocked, even while another
process held its lock."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ser_cli.cli.app import app
from ser_cli.runtime.errors import UserError
from ser_cli.runtime.output_lock import lock_path, locks_outputs, output_lock
from tests import faults
from tests.conftest import make_synth

runner = CliRunner()


@locks_outputs("out", torchrun=True)
def _torchrun_stage(out: Path) -> str:
    return lock_path(out).read_text().strip() if lock_path(out).exists() else "no lock file"


def _as_rank(monkeypatch: pytest.MonkeyPatch, rank: int, world_size: int = 2) -> None:
    """The environment torchrun gives rank `rank` (only what `distributed.detect` reads)."""
    for name, value in {"RANK": rank, "LOCAL_RANK": rank, "WORLD_SIZE": world_size}.items():
        monkeypatch.setenv(name, str(value))


def test_only_rank_0_of_a_torchrun_stage_takes_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    _as_rank(monkeypatch, 0)
    assert _torchrun_stage(out) == str(os.getpid())  # rank 0 holds it while the stage runs
    with output_lock(out):  # another job's rank 0 (flock is per open file, so this process counts as another)
        _as_rank(monkeypatch, 1)
        assert _torchrun_stage(out) == str(os.getpid())  # rank 1 neither takes it nor is refused by it
        _as_rank(monkeypatch, 0)
        with pytest.raises(UserError, match=f"--out {out}: being written by another ser process \\(pid {os.getpid()}"):
            _torchrun_stage(out)
    assert not lock_path(out).exists()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synth(tmp_path_factory.mktemp("ranks") / "data.h5")


@pytest.mark.parametrize("args", [
    ["data", "synth", "--out", "{out}"],
    ["data", "spurious", "{data}", "--out", "{out}"],
    ["data", "import", "imagefolder", "{tmp}", "--out", "{out}"],
    ["train", "--data", "{data}", "--out", "{out}"],
    ["compare", "{data}", "--out", "{out}"],
    ["predict", "{data}", "--model", "{data}", "--out", "{out}"],
], ids=["data-synth", "data-spurious", "data-import", "train", "compare", "predict"])
@pytest.mark.parametrize("rank", [0, 1])
def test_a_one_process_command_refuses_several_ranks(args: list[str], rank: int, data: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out" / "result"
    _as_rank(monkeypatch, rank)
    result = runner.invoke(app, ["-q", *(a.format(out=out, data=data, tmp=tmp_path) for a in args)])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert lines == ["error: WORLD_SIZE=2: this command runs in one process (torchrun runs ser precompute, "
                     "pretrain-saliency and evaluate); run it without torchrun"], lines
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_second_torchrun_job_is_refused_at_rank_0_and_leaves_nothing(data: Path, tmp_path: Path) -> None:
    """A real 2-process `ser precompute` (gloo on the CPU) while this process holds the output's lock: refused, one
    line naming this pid, no output or work file; once the lock is free the same job runs, so its rank 1 does not
    take the lock rank 0 holds."""
    out = tmp_path / "maps.h5"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ser_cli", "-q",
           "precompute", "--from-dataset", "--data", str(data), "--out", str(out)]
    with output_lock(out):
        done = subprocess.run(cmd, cwd=tmp_path, env=faults.env(), capture_output=True, text=True, timeout=300)
    assert done.returncode != 0, done.stderr[-2000:]
    refusals = [line for line in done.stderr.splitlines() if line.startswith("error: ")]  # torchrun adds its report
    assert refusals == [f"error: --out {out}: being written by another ser process (pid {os.getpid()}); wait for it "
                        "to finish or stop it"], done.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []
    done = subprocess.run(cmd, cwd=tmp_path, env=faults.env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    names = [p.name for p in tmp_path.iterdir()]
    assert "maps.h5" in names and not [n for n in names if n.endswith((".partial", ".ser-lock"))], names
