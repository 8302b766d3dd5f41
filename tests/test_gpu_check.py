"""The GPU check (`python -m benchmarks gpu-check`, issue 33 item 2) in its CPU mode: it runs unchanged without a
card, says which checks it skipped and why, and the parts a CPU can do produce numbers; the CUDA-vs-CPU verdict and
the time budget on made-up figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check as g

ROOT = Path(__file__).resolve().parents[1]
CPU_ONLY = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU mode (a card runs the CUDA parts)")


@CPU_ONLY
@pytest.mark.slow
def test_cpu_mode_states_its_skips_and_measures_the_cpu_parts(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "gpu-check", "--tiny", "--step-device", "cpu", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "skipped 3 check(s)" in done.stdout and "needs CUDA" in done.stdout
    checks = {(c["check"], c["case"]): c for c in json.loads(out.read_text())["checks"]}

    tests = checks["cuda-tests", "pytest -m cuda"]
    assert tests["status"] == "skipped" and tests["figures"]["skipped"] >= 1 and "CUDA" in tests["note"]
    for case in ("cuda bf16 (auto) vs cpu", "cuda fp32 vs cpu"):
        assert checks["end-to-end", case]["status"] == "skipped" and checks["end-to-end", case]["note"] == g.NO_CUDA
    reference = checks["end-to-end", "cpu reference (fp32)"]
    assert reference["status"] == "ok" and 0 <= reference["figures"][g.ACCURACY] <= 100
    assert reference["figures"]["train_steps"] > 0 and reference["figures"]["train_wall_s"] > 0
    steps = [c for c in checks.values() if c["check"] == "train-step"]
    assert len(steps) == 2 and all(c["status"] == "ok" for c in steps)
    for c in steps:
        f = c["figures"]
        assert f["s_per_step"] > 0 and f["gflop_per_step"] > 0 and f["peak_memory_gb"] > 0
        assert 0 < f["fraction_of_matmul_peak"] and f["matmul_peak_dtype"] == "float32"


@CPU_ONLY
def test_the_default_step_check_is_skipped_without_cuda_and_says_so() -> None:
    checks = g.train_steps("full", "cuda", "both", g.Budget(600))
    assert [c.case for c in checks] == [
        "derpp resnet18 288x384 cuda", "derpp+ser resnet18 288x384 cuda",
        "derpp resnet18 288x384 cuda compiled", "derpp+ser resnet18 288x384 cuda compiled",
    ]
    assert all(c.status == "skipped" and c.note.startswith(g.NO_CUDA) for c in checks)


def test_compiled_configurations_get_a_longer_warm_up_and_come_last() -> None:
    configs = g.step_configs("full", "cuda", "both")
    assert [(c.compile, c.ser) for c in configs] == [(False, False), (False, True), (True, False), (True, True)]
    assert [c.warmup for c in configs] == [2, 2, g.COMPILED_WARMUP, g.COMPILED_WARMUP]


@pytest.mark.parametrize("precision", ["auto", "fp32"])
@pytest.mark.parametrize(("offset", "status"), [(-0.5, "ok"), (0.5, "failed")])
@pytest.mark.parametrize("sign", [1, -1])
def test_a_cuda_run_passes_within_its_precisions_tolerance(precision: str, offset: float, status: str,
                                                           sign: int) -> None:
    diff = sign * (g.TOLERANCE_PP[precision] + offset)  # just inside or just outside, either side of the CPU
    verdict, note = g.compare({g.ACCURACY: 42.0}, {g.ACCURACY: 42.0 + diff}, precision)
    assert verdict == status and f"{diff:+.2f} pp" in note


def test_nothing_starts_once_the_budget_is_spent() -> None:
    budget = g.Budget(0)
    assert g.end_to_end("tiny", budget)[0].status == "skipped"
    assert {c.status for c in g.train_steps("tiny", "cpu", "off", budget)} == {"skipped"}
