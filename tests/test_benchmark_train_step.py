"""The train-step benchmark (`python -m benchmarks train-step`, issue 13): FLOP counts against closed forms, the
grid and its options, and a `--quick` run whose JSON must hold every field with sane values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmarks.compute_peaks import ConvSpec, conv_shapes, counted_flops
from benchmarks.train_step import QUICK, configs, label, parse_args
from benchmarks.train_step_worker import StepConfig, build, random_batch, train_step

ROOT = Path(__file__).resolve().parents[1]
QUICK_CONFIG = StepConfig(method="derpp", ser=True, height=32, width=48, warmup=1, steps=2, buffer_size=64)


@pytest.mark.parametrize(("c_in", "c_out", "h", "w", "padding", "batch"), [(3, 8, 9, 13, 1, 2), (6, 4, 10, 7, 0, 3)])
def test_conv_flops_match_closed_form(c_in: int, c_out: int, h: int, w: int, padding: int, batch: int) -> None:
    conv = nn.Conv2d(c_in, c_out, 3, padding=padding, bias=False)
    x = torch.randn(batch, c_in, h, w, requires_grad=True)
    out_h, out_w = h + 2 * padding - 2, w + 2 * padding - 2
    spec = ConvSpec(c_in, c_out, h, w, out_h, out_w, padding)
    counted, conv_only = counted_flops(lambda: conv(x).sum().backward())
    # forward, input gradient and weight gradient: 2 FLOPs per multiply-add, C_in * 9 of them per output value
    assert spec.flops(batch) == 3 * 2 * batch * c_out * out_h * out_w * c_in * 9 == counted == conv_only


def test_conv_shapes_are_the_reduced_resnets_stages() -> None:
    settings, learner, _ = build(QUICK_CONFIG, torch.device("cpu"))
    specs = conv_shapes(learner.classifier, 32, 48, torch.device("cpu"))
    # the stem (3 -> 20 at full size), then one stride-1 shape per stage: widths 20..160, sizes halving from stage 2
    assert [(s.in_channels, s.out_channels, s.height, s.width) for s in specs] == [
        (3, 20, 32, 48),
        (20, 20, 32, 48),
        (40, 40, 16, 24),
        (80, 80, 8, 12),
        (160, 160, 4, 6),
    ]


def test_plain_derpp_step_counts_three_full_passes() -> None:
    """A plain DER++ step with a full buffer is forward + backward of the classifier on 8 stream and 2 x 8 replay
    images: 3x the forward FLOPs of 24 images, less the input gradient the stem never computes (1x its forward)."""
    cfg = StepConfig(method="derpp", ser=False, height=32, width=48, warmup=1, steps=2, buffer_size=64)
    device = torch.device("cpu")
    settings, learner, method = build(cfg, device)
    assert method.buffer.filled == method.buffer.capacity == 64
    batch = random_batch(cfg, 1, torch.Generator().manual_seed(0))
    step, _ = counted_flops(lambda: train_step(method, learner, batch, device))
    images = 3 * cfg.batch_size
    with torch.no_grad():
        forward, _ = counted_flops(lambda: learner.classifier(torch.zeros(images, 3, 32, 48)))
    stem = images * 2 * 20 * 32 * 48 * 3 * 9
    assert step == 3 * forward - stem


def test_options() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--steps", "4"])  # fewer than 5 steady-state steps outside --quick
    with pytest.raises(SystemExit):
        parse_args(["--sizes", "32x48x3"])
    quick = parse_args(["--quick"])
    assert (quick.steps, quick.sizes, quick.device, quick.out.name) == (2, "32x48", "cpu", "train_step_quick.json")
    grid = configs(parse_args(["--methods", "derpp,er_ace", "--sizes", "32x48,64x96", "--backbones", "resnet18"]))
    assert len(grid) == 2 * 2 * 2  # methods x sizes x SER off/on
    assert [(c.height, c.method, c.ser) for c in grid[:3]] == [
        (32, "derpp", False),
        (32, "derpp", True),
        (32, "er_ace", False),
    ]
    assert all(c.steps == 5 and c.buffer_size == 2000 and c.backbone == "resnet18" for c in grid)
    assert all(c.figures and not c.activation_checkpointing for c in grid)


def test_memory_only_and_activation_checkpointing_options() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--memory-only", "--steps", "0"])
    args = parse_args(["--memory-only", "--steps", "1", "--warmup", "0", "--activation-checkpointing", "both",
                       "--methods", "derpp", "--ser", "on", "--sizes", "32x48", "--backbones", "resnet18"])
    grid = configs(args)
    assert [(c.steps, c.warmup, c.figures, c.activation_checkpointing) for c in grid] == [
        (1, 0, False, False), (1, 0, False, True)]
    assert grid[1].settings().activation_checkpointing


def test_memory_format_option() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--memory-format", "nhwc"])
    grid = configs(parse_args(["--memory-format", "contiguous,channels_last", "--methods", "derpp", "--ser", "on",
                               "--sizes", "32x48", "--backbones", "resnet18"]))
    assert [c.memory_format for c in grid] == ["contiguous", "channels_last"]
    assert [c.settings().memory_format for c in grid] == ["contiguous", "channels_last"]
    assert configs(parse_args(["--sizes", "32x48"]))[0].settings().memory_format == "auto"


def test_compile_option() -> None:
    grid = configs(parse_args(["--compile", "both", "--methods", "derpp", "--ser", "on", "--sizes", "32x48",
                               "--backbones", "resnet18"]))
    assert [(c.compile, c.settings().compile) for c in grid] == [(False, False), (True, True)]
    assert label({**grid[1].__dict__, "device": "cpu"}).endswith(" compiled")


def sane_step_result(r: dict) -> None:
    """Every field of one configuration's result, with values that can be true of a real run."""
    s = r["step_seconds"]
    assert 0 < s["min"] <= s["median"] <= s["max"] and len(s["all"]) == r["config"]["steps"] == QUICK["steps"]
    assert 0 < r["conv_flop_per_step"] <= r["flop_per_step"]
    assert r["conv_flop_per_step"] > 0.95 * r["flop_per_step"]  # a ResNet step is convolutions
    assert r["gflop_per_s"] == pytest.approx(r["flop_per_step"] / s["median"] / 1e9)
    assert r["matmul_peak"]["n"] == QUICK["matmul_n"] and r["matmul_peak"]["dtype"] == "float32"
    conv = r["conv_peak"]
    assert conv["gflop_per_s"] == max(shape["gflop_per_s"] for shape in conv["shapes"]) == conv["best"]["gflop_per_s"]
    for name in ("matmul", "conv"):
        assert r[f"fraction_of_{name}_peak"] == pytest.approx(r["gflop_per_s"] / r[f"{name}_peak"]["gflop_per_s"])
        assert 0 < r[f"fraction_of_{name}_peak"] < 1.5
    cpu = r["cpu_seconds_per_step"]
    assert cpu["user"] > 0 and cpu["sys"] >= 0 and 0 <= cpu["sys_share"] < 1
    assert len(cpu["user_all"]) == len(cpu["sys_all"]) == QUICK["steps"] and r["minor_faults_per_step"] >= 0
    rss = r["rss_bytes_per_step"]
    assert len(rss) == QUICK["steps"] and 0 < r["rss_bytes_at_start"] <= max(rss) <= r["peak_rss_bytes"]
    assert r["cuda_max_allocated_bytes"] is None
    # 64 slots + 1 scratch row: uint8 images, int64 labels and tasks, float32 logits of 20 x 5 classes (DER++)
    assert r["buffer_bytes"] == 65 * (3 * 32 * 48 + 8 + 8 + 4 * 100)
    assert r["losses_finite"] is True
    assert r["config"]["threads"] == 1 and r["config"]["precision"] == "fp32" and r["config"]["device"] == "cpu"


@pytest.mark.slow
def test_quick_run_writes_every_field(tmp_path: Path) -> None:
    out = tmp_path / "results" / "train_step.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "benchmarks", "train-step", "--quick", "--ser", "on", "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "derpp+ser resnet18_reduced 32x48 cpu" in done.stdout and str(out) in done.stdout
    report = json.loads(out.read_text())
    assert report["benchmark"] == "train-step" and report["command"].endswith("--out " + str(out))
    assert [(r["config"]["method"], r["config"]["ser"]) for r in report["results"]] == [("derpp", True)]
    sane_step_result(report["results"][0])
    assert not list(out.parent.glob("*.partial"))


@pytest.mark.slow
def test_end_to_end_times_the_real_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks.train_step_e2e import end_to_end

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = end_to_end(QUICK_CONFIG, step_seconds=0.5)
    assert "error" not in result, result
    # task 1 holds steps + 1 batches: `steps` intervals after its first step; task 0 the warm-up batch
    assert result["intervals"] == QUICK_CONFIG.steps and result["steps"] == QUICK_CONFIG.warmup + QUICK_CONFIG.steps + 1
    assert result["seconds_per_step"] > 0 and result["steps_per_s"] == pytest.approx(1 / result["seconds_per_step"])
    assert result["ratio_to_step_only"] == pytest.approx(result["seconds_per_step"] / 0.5)
    assert result["step_only_steps_per_s"] == 2.0 and result["workers"] == 0
    assert result["overall_seconds_per_step"] > 0 and result["peak_memory_bytes"] > 0
    assert result["wall_seconds"] > result["seconds_per_step"] * result["intervals"]


def test_benchmarks_help_lists_every_benchmark() -> None:
    from benchmarks.common import BENCHMARKS

    done = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for name in (*BENCHMARKS, "train-step", "backbones", "gpu-check", "demo"):
        assert name in done.stdout, name


def test_allocator_option_makes_one_tuned_config_per_allocator_and_one_untuned() -> None:
    with pytest.raises(SystemExit):
        configs(parse_args(["--allocator", "glibc,jemalloc", "--sizes", "32x48"]))
    grid = configs(parse_args(["--allocator", "glibc,mimalloc", "--memory-tuning", "both", "--methods", "derpp",
                               "--ser", "on", "--sizes", "32x48", "--backbones", "resnet18"]))
    assert [(c.memory_tuning, c.allocator) for c in grid] == [(False, "glibc"), (True, "glibc"), (True, "mimalloc")]


def test_allocator_environment_preloads_the_chosen_library(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import train_step
    from ser_cli.runtime import allocator

    base = StepConfig(method="derpp", ser=True, backbone="resnet18_reduced", height=32, width=48, device="cpu")
    env = {"PATH": "/bin"}
    glibc = train_step.allocator_environment(env, replace(base, allocator="glibc"))
    assert glibc["SER_ALLOCATOR"] == "glibc" and "LD_PRELOAD" not in glibc
    monkeypatch.setattr(allocator, "find_tcmalloc", lambda: None)
    result = train_step.run_config(replace(base, allocator="tcmalloc"))
    assert result["error"].startswith("tcmalloc is not installed here")
    monkeypatch.setattr(allocator, "find_mimalloc", lambda: Path("/opt/x/libmimalloc.so.3"))
    mi = train_step.allocator_environment(env, replace(base, allocator="mimalloc"))
    assert mi["LD_PRELOAD"].split()[0] == "/opt/x/libmimalloc.so.3" and mi["MIMALLOC_PURGE_DELAY"] == "-1"
    auto = train_step.allocator_environment(env, replace(base, allocator="auto"))  # what `ser` does: tcmalloc absent
    assert auto["LD_PRELOAD"] == "/opt/x/libmimalloc.so.3"


@pytest.mark.slow
def test_a_mimalloc_child_runs_on_mimalloc() -> None:
    """The pip wheel's library really is what the child allocates with (its /proc/self/maps), and the step runs."""
    from benchmarks.train_step import run_config
    from ser_cli.runtime.allocator import find_mimalloc

    if find_mimalloc() is None:
        pytest.skip("cmeel-mimalloc is not installed here (a dependency on Linux x86-64 and aarch64)")
    args = parse_args(["--quick", "--memory-only", "--steps", "2", "--warmup", "1", "--ser", "off", "--allocator",
                       "mimalloc,glibc"])
    results = [run_config(replace(c, threads=1)) for c in configs(args)]
    assert [r.get("error") for r in results] == [None, None]
    assert [r["config"]["memory_tuning_applied"] for r in results] == ["mimalloc", "glibc"]
    assert all(r["losses_finite"] for r in results)
