"""`ser` lets idle OpenMP threads spin briefly, then sleep (`GOMP_SPINCOUNT=5000`, `ser_cli/cli/entry.py`) unless the
user chose how threads wait, and the waiting changes no result: two threads give bit-identical weights under each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ser_cli.cli.app
from ser_cli.cli import entry
from ser_cli.runs.saliency_file import load_saliency_checkpoint


@pytest.mark.parametrize(("user", "expected"), [
    ({}, {"GOMP_SPINCOUNT": "5000"}),
    ({"OMP_WAIT_POLICY": "PASSIVE"}, {"OMP_WAIT_POLICY": "PASSIVE"}),
    ({"GOMP_SPINCOUNT": "100"}, {"GOMP_SPINCOUNT": "100"}),
])
def test_a_short_spin_unless_the_user_chose(user: dict[str, str], expected: dict[str, str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # a copy of the environment: what main() adds must not reach the later tests' child processes
    environ = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")} | user
    monkeypatch.setattr(os, "environ", environ)
    monkeypatch.setattr(entry, "restart_on_fast_allocator", lambda argv: None)
    monkeypatch.setattr(ser_cli.cli.app, "main", lambda: None)
    entry.main()
    assert {k: environ[k] for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in environ} == expected


@pytest.mark.slow
def test_two_threads_give_the_same_weights_under_either_policy(tiny_synth_pretrain: Path, tmp_path: Path) -> None:
    weights = {}
    for policy in ("ACTIVE", "PASSIVE", "spin"):
        out = tmp_path / policy
        args = [sys.executable, "-m", "ser_cli", "--quiet", "pretrain-saliency", "--data", str(tiny_synth_pretrain),
                "--out", str(out), "--device", "cpu", "--set", "saliency.epochs=1", "--set", "saliency.batch_size=8",
                "--set", "saliency.precise_bn_batches=1"]
        wait = {"GOMP_SPINCOUNT": "5000"} if policy == "spin" else {"OMP_WAIT_POLICY": policy}
        base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
        env = {**base, "OMP_NUM_THREADS": "2", **wait}
        done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        weights[policy] = load_saliency_checkpoint(out / "model.pt")[0].state_dict()
    for other in ("PASSIVE", "spin"):
        assert all(torch.equal(weights["ACTIVE"][k], weights[other][k]) for k in weights["ACTIVE"])
