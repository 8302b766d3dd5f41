"""`ser` lets idle OpenMP threads sleep (`OMP_WAIT_POLICY=PASSIVE`, `ser_cli/cli/entry.py`) unless the user chose a
policy, and the policy changes no result: two threads give bit-identical weights under either."""

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


@pytest.mark.parametrize(("user", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_passive_unless_the_user_chose(user: str | None, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    if user is not None:
        monkeypatch.setenv("OMP_WAIT_POLICY", user)
    monkeypatch.setattr(entry, "restart_on_fast_allocator", lambda argv: None)
    monkeypatch.setattr(ser_cli.cli.app, "main", lambda: None)
    entry.main()
    assert os.environ["OMP_WAIT_POLICY"] == expected


@pytest.mark.slow
def test_two_threads_give_the_same_weights_under_either_policy(tiny_synth_pretrain: Path, tmp_path: Path) -> None:
    weights = {}
    for policy in ("ACTIVE", "PASSIVE"):
        out = tmp_path / policy
        args = [sys.executable, "-m", "ser_cli", "--quiet", "pretrain-saliency", "--data", str(tiny_synth_pretrain),
                "--out", str(out), "--device", "cpu", "--set", "saliency.epochs=1", "--set", "saliency.batch_size=8",
                "--set", "saliency.precise_bn_batches=1"]
        env = {**os.environ, "OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": policy}
        done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        weights[policy] = load_saliency_checkpoint(out / "model.pt")[0].state_dict()
    assert all(torch.equal(weights["ACTIVE"][k], weights["PASSIVE"][k]) for k in weights["ACTIVE"])
