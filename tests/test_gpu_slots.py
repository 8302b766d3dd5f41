"""`--device cuda:auto` (`runtime/gpu_slots.py`): concurrent `ser` processes each claim a different GPU slot, wait
when all are held, and a slot frees when its holder dies (even by SIGKILL). Tested with plain slots, no GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ser_cli.cli.app import app
from ser_cli.runtime.device import resolve_device
from ser_cli.runtime.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
# A job: claim one of 2 slots (saying when it has to wait), print the index, hold it until killed.
JOB = """
import sys, time
from pathlib import Path
from ser_cli.runtime.gpu_slots import claim_slot
index = claim_slot(2, Path(sys.argv[1]), poll_seconds=0.05, on_wait=lambda n: print("waiting", flush=True))
print(index, flush=True)
time.sleep(600)
"""


def _job(folder: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", JOB, str(folder)], cwd=ROOT, stdout=subprocess.PIPE, text=True)


def test_jobs_get_different_slots_wait_when_all_are_held_and_inherit_a_dead_jobs_slot(tmp_path: Path) -> None:
    first, second = _job(tmp_path), None
    try:
        assert first.stdout.readline().strip() == "0"
        second = _job(tmp_path)
        assert second.stdout.readline().strip() == "1"
        third = _job(tmp_path)
        assert third.stdout.readline().strip() == "waiting"  # both slots held: it waits rather than share
        first.kill()  # SIGKILL: the kernel drops its lock
        first.wait()
        assert third.stdout.readline().strip() == "0"
    finally:
        for job in (first, second, locals().get("third")):
            if job is not None:
                job.kill()
                job.wait()


def test_a_process_keeps_its_slot_on_a_second_claim(tmp_path: Path) -> None:
    code = ("import sys; from pathlib import Path; from ser_cli.runtime.gpu_slots import claim_slot; "
            "print(claim_slot(3, Path(sys.argv[1])), claim_slot(3, Path(sys.argv[1])))")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          check=True, timeout=60)
    assert done.stdout.split() == ["0", "0"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_cuda_auto_without_cuda_is_a_usage_error() -> None:
    with pytest.raises(UserError, match=r"--device cuda:auto: CUDA is not available"):
        resolve_device("cuda:auto")
    with pytest.raises(UserError, match=r"must be auto, cpu, cuda, cuda:N or cuda:auto"):
        resolve_device("cuda:any")


def test_ser_device_sets_the_default_device(tiny_synth: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["-q", "train", "--data", str(tiny_synth), "--out", str(tmp_path / "run")],
                                env={"SER_DEVICE": "tpu"})
    assert result.exit_code == 2 and "--device: must be auto" in result.output, result.output
    assert not (tmp_path / "run").exists()
