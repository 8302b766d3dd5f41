"""`python -m benchmarks train-step`: seconds, FLOPs, CPU time and memory of one `ser train` step (issue 13).

For every method x SER on/off x backbone x input size x device it starts one process
(`benchmarks.train_step_worker`) that builds the step exactly as `ser train` does, fills the replay buffer, runs
warm-up steps and then the measured ones, and reports: median / min / max seconds per step; FLOPs of one step
(`torch.utils.flop_counter`) and the rate they give at the median; the same process's matmul peak (N x N, best of
3; sgemm on CPU) and convolution peak (the best of the network's 3x3 convolutions, forward + backward at the
step's size and batch; `benchmarks.compute_peaks`) and the fraction of each the step reaches; user and sys CPU
seconds and minor page faults per step; the peak resident set (CUDA: peak allocated) and the resident set after
each step; the buffer's bytes. With `--end-to-end` it also runs the real `ser train` on a small data file
(`benchmarks.train_step_e2e`) and sets its steady seconds per step, loading included, beside the step-only figure.
Results go to a Rich table and to JSON (`--out`, rewritten atomically after every configuration, so an interrupted
sweep keeps what it finished).

Examples:
    python -m benchmarks train-step --quick                        # tiny smoke run, about a minute on a CPU
    python -m benchmarks train-step --backbones resnet18 --sizes 64x96,288x384 --methods derpp --ser on
    python -m benchmarks train-step --device cuda --sizes 288x384 --end-to-end
    OMP_NUM_THREADS=2 python -m benchmarks train-step ...          # threads of every child process
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.train_step_worker import StepConfig
from ser_cli.runtime.allocator import allocator_to_preload, preload_environment
from ser_cli.runtime.atomic import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = {
    "methods": "derpp,er_ace",
    "ser": "both",
    "backbones": "resnet18_reduced,resnet18",
    "sizes": "32x48,64x96,288x384",
    "device": "auto",
    "steps": 5,
    "warmup": 2,
    "buffer_size": 2000,
    "matmul_n": 4096,
    "peak_repeats": 3,
}
QUICK = {
    "methods": "derpp",
    "ser": "both",
    "backbones": "resnet18_reduced",
    "sizes": "32x48",
    "device": "cpu",
    "steps": 2,
    "warmup": 1,
    "buffer_size": 64,
    "matmul_n": 512,
    "peak_repeats": 5,  # tiny kernels on a busy machine: more tries for a best
}
MIN_STEPS = 5  # steady-state steps outside --quick
QUICK_MIN_STEPS = 2  # a smoke run still has a min, a median and a max
GB, MB = 1e9, 1e6

# --allocator: what each child runs on (`allocator_environment`)
ALLOCATORS = ("auto", "glibc", "tcmalloc", "mimalloc")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks train-step", description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--methods", help=f"Comma-separated methods (default {DEFAULTS['methods']}).")
    add("--ser", choices=["both", "on", "off"], help="SER on, off or both (default both).")
    add("--backbones", help=f"Comma-separated backbones (default {DEFAULTS['backbones']}).")
    add("--sizes", help=f"Comma-separated HxW input sizes (default {DEFAULTS['sizes']}).")
    add("--device", help="auto, cpu, cuda, cuda:N, or several comma-separated (default auto).")
    add("--steps", type=int, help=f"Measured steps, >= {MIN_STEPS} (default {DEFAULTS['steps']}).")
    add("--warmup", type=int, help=f"Unmeasured steps before them (default {DEFAULTS['warmup']}).")
    add("--buffer-size", type=int, help="Replay buffer capacity, filled before timing (default 2000, the paper's).")
    add("--matmul-n", type=int, help="N of the N x N matmul peak (default 4096).")
    add("--threads", type=int, default=0, help="torch threads in each child (default: torch's, i.e. OMP_NUM_THREADS).")
    add("--memory-tuning", choices=["on", "off", "both"], default="on",
        help="Keep freed memory mapped as `ser` does (on), leave malloc alone (off), or both, side by side.")
    add("--allocator", default="auto",
        help="Host allocator of each child, comma-separated for side by side: auto (what `ser` does: tcmalloc when "
        "installed, else mimalloc from pip, else glibc with mallopt), glibc (mallopt alone), tcmalloc (the "
        "system's), mimalloc (the pip wheel cmeel-mimalloc, freed pages kept: MIMALLOC_PURGE_DELAY=-1). With "
        "--memory-tuning off: ignored.")
    add("--activation-checkpointing", choices=["on", "off", "both"], default="off",
        help="Recompute the classifier's blocks in the backward (train.activation_checkpointing); both: side by side.")
    add("--memory-format", default="auto",
        help="train.memory_format: auto, channels_last, contiguous, or several comma-separated, side by side.")
    add("--compile", choices=["on", "off", "both"], default="off",
        help="torch.compile the networks (train.compile; the warm-up steps compile: use --warmup >= 2); both: side by "
        "side.")
    add("--memory-only", action="store_true",
        help="Time and memory alone: no FLOP count and no matmul / convolution peaks; --steps >= 1 and --warmup >= 0 "
        "(peak memory needs one step).")
    add("--end-to-end", action="store_true", help="Also time the real `ser train` (loading included) per config.")
    add(
        "--quick",
        action="store_true",
        help="Tiny smoke configuration: " + ", ".join(f"{k} {v}" for k, v in QUICK.items()) + ".",
    )
    add(
        "--out",
        type=Path,
        help="JSON results file (default benchmarks/results/train_step.json; with --quick "
        "train_step_quick.json, so a smoke run never replaces a real sweep).",
    )
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key, None) is None:  # peak_repeats has no option
            setattr(args, key, value)
    args.out = args.out or ROOT / "benchmarks" / "results" / f"train_step{'_quick' if args.quick else ''}.json"
    if args.memory_only:
        if args.steps < 1 or args.warmup < 0:
            parser.error("--steps must be >= 1 and --warmup >= 0")
    elif args.steps < (QUICK_MIN_STEPS if args.quick else MIN_STEPS) or args.warmup < 1:
        parser.error(f"--steps must be >= {MIN_STEPS} (>= {QUICK_MIN_STEPS} with --quick) and --warmup >= 1")
    try:
        args.size_list = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",")]
    except ValueError:
        args.size_list = []
    if not args.size_list or any(len(hw) != 2 or min(hw) < 1 for hw in args.size_list):
        parser.error(f"--sizes: expected HxW[,HxW...] with positive H and W (got {args.sizes!r})")
    layouts = ("auto", "channels_last", "contiguous")
    if any(f not in layouts for f in args.memory_format.split(",")):
        parser.error(f"--memory-format: expected {', '.join(layouts)} or several comma-separated "
                     f"(got {args.memory_format!r})")
    return args


def configs(args: argparse.Namespace) -> list[StepConfig]:
    """The grid, slowest axis first: device, backbone, size, method, SER."""
    base = StepConfig(
        warmup=args.warmup,
        steps=args.steps,
        buffer_size=args.buffer_size,
        matmul_n=args.matmul_n,
        threads=args.threads,
        peak_repeats=args.peak_repeats,
        figures=not args.memory_only,
    )
    sers = {"both": (False, True), "on": (True,), "off": (False,)}[args.ser]
    tunings = {"both": (False, True), "on": (True,), "off": (False,)}[args.memory_tuning]
    recomputes = {"both": (False, True), "on": (True,), "off": (False,)}[args.activation_checkpointing]
    compiles = {"both": (False, True), "on": (True,), "off": (False,)}[args.compile]
    allocators = args.allocator.split(",")
    unknown = sorted(set(allocators) - set(ALLOCATORS))
    if unknown:
        raise SystemExit(f"--allocator: unknown {', '.join(unknown)} (known: {', '.join(ALLOCATORS)})")
    grid = itertools.product(
        args.device.split(","), args.backbones.split(","), args.size_list, args.methods.split(","), sers, tunings,
        allocators, recomputes, args.memory_format.split(","), compiles,
    )
    return [replace(base, device=d, backbone=b, height=h, width=w, method=m, ser=s, memory_tuning=t, allocator=a,
                    activation_checkpointing=r, memory_format=f, compile=c)
            for d, b, (h, w), m, s, t, a, r, f, c in grid if t or a == allocators[0]]


def run_config(cfg: StepConfig, timeout: float | None = None) -> dict[str, Any]:
    """One configuration in a fresh process; `{"config": ..., "error": last stderr line}` when it fails or runs past
    `timeout` seconds (the GPU check's time budget)."""
    env = {**os.environ, "SER_QUIET": "1"}
    try:
        env = allocator_environment(env, cfg)
    except LookupError as missing:
        return {"config": cfg.__dict__, "error": str(missing)}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.train_step_worker", json.dumps(cfg.__dict__)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"config": cfg.__dict__, "error": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit {done.returncode}"]
        return {"config": cfg.__dict__, "error": lines[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def allocator_environment(env: dict[str, str], cfg: StepConfig) -> dict[str, str]:
    """The child's environment for `cfg.allocator`: the library preloaded as `ser` restarts itself
    (runtime/allocator.py), or nothing preloaded for glibc; LookupError when the allocator is not installed."""
    if not cfg.memory_tuning or cfg.allocator == "glibc":
        return {**env, "SER_ALLOCATOR": "glibc"}
    chosen = env if cfg.allocator == "auto" else {**env, "SER_ALLOCATOR": cfg.allocator}
    library = allocator_to_preload(chosen)
    if library is None and cfg.allocator != "auto":
        raise LookupError(f"{cfg.allocator} is not installed here (tcmalloc: apt install libtcmalloc-minimal4; "
                          "mimalloc: pip install cmeel-mimalloc)")
    return preload_environment(chosen, library) if library is not None else env


def label(cfg: dict[str, Any]) -> str:
    method = f"{cfg['method']}{'+ser' if cfg['ser'] else ''}"
    untuned = "" if cfg.get("memory_tuning", True) else " no-memory-tuning"
    if cfg.get("memory_tuning", True) and isinstance(cfg.get("memory_tuning_applied"), str):
        untuned = f" {cfg['memory_tuning_applied']}"  # which tuning ran: tcmalloc, glibc (mallopt) or none
    recompute = " activation-checkpointing" if cfg.get("activation_checkpointing") else ""
    layout = f" {cfg['memory_format']}" if cfg.get("memory_format", "auto") != "auto" else ""
    compiled = " compiled" if cfg.get("compile") else ""
    return (f"{method} {cfg['backbone']} {cfg['height']}x{cfg['width']} {cfg['device']}{untuned}{recompute}{layout}"
            f"{compiled}")


def seconds_cell(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.0f}"


def percent_of(fraction: float, peak: dict[str, Any]) -> str:
    return f"{100 * fraction:.0f} % of {peak['gflop_per_s']:,.0f}"


def cells(r: dict[str, Any]) -> list[str]:
    """A result as table cells after its label."""
    s, cpu, rss = r["step_seconds"], r["cpu_seconds_per_step"], r["rss_bytes_per_step"]
    memory = r["cuda_max_allocated_bytes"] if r["cuda_max_allocated_bytes"] is not None else r["peak_rss_bytes"]
    e2e = r.get("end_to_end")
    e2e_cell = (
        "-"
        if e2e is None
        else e2e.get("error") or (f"{e2e['seconds_per_step']:.3g} ({e2e['ratio_to_step_only']:.2f}x)")
    )
    figures = (
        [
            f"{r['flop_per_step'] / GB:,.1f}",
            f"{r['gflop_per_s']:,.1f}",
            percent_of(r["fraction_of_matmul_peak"], r["matmul_peak"]),
            percent_of(r["fraction_of_conv_peak"], r["conv_peak"]),
        ]
        if "flop_per_step" in r
        else ["-"] * 4  # --memory-only
    )
    return [
        f"{s['median']:.3g} ({s['min']:.3g}-{s['max']:.3g})",
        *figures,
        f"{seconds_cell(cpu['user'])} / {seconds_cell(cpu['sys'])} ({100 * cpu['sys_share']:.0f} %)",
        f"{r['minor_faults_per_step']:,.0f}",
        f"{memory / GB:.2f}",
        f"{rss[0] / GB:.2f}-{rss[-1] / GB:.2f}",
        f"{r['buffer_bytes'] / MB:,.1f}",
        e2e_cell,
    ]


# (header, justify); the first is the configuration
COLUMNS = [
    ("configuration", "left"),
    ("s/step median (min-max)", "right"),
    ("GFLOP /step", "right"),
    ("GFLOP/s", "right"),
    ("of matmul peak GFLOP/s", "right"),
    ("of conv peak GFLOP/s", "right"),
    ("CPU s/step user / sys (sys share)", "right"),
    ("minor faults /step", "right"),
    ("peak RSS GB (CUDA: alloc)", "right"),
    ("RSS GB first-last step", "right"),
    ("buffer MB", "right"),
    ("ser train s/step (x step only)", "right"),
]


def table(results: list[dict[str, Any]], seconds: float) -> Table:
    out = Table(title=f"ser train step ({seconds:.0f} s)")
    for header, justify in COLUMNS:
        out.add_column(header, justify=justify, no_wrap=header == "configuration")
    for r in results:
        rest = cells(r) if "error" not in r else [f"error: {r['error']}"] + [""] * (len(COLUMNS) - 2)
        out.add_row(label(r["config"]), *rest)
    return out


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    start, results = time.perf_counter(), []
    report = {
        "benchmark": "train-step",
        "command": " ".join(["python -m benchmarks train-step", *argv]),
        "host": platform.node(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "results": results,
    }
    for cfg in configs(args):
        result = run_config(cfg)
        if args.end_to_end and "error" not in result:
            from benchmarks.train_step_e2e import end_to_end  # imports h5py / PIL only when asked

            result["end_to_end"] = end_to_end(cfg, result["step_seconds"]["median"])
        results.append(result)
        write_json_atomic(args.out, report)
    # piped output (a log, RESULTS.md) gets the whole table rather than Rich's 80-column default
    Console(width=None if sys.stdout.isatty() else 220).print(table(results, time.perf_counter() - start))
    print(f"results: {args.out}")
    return 1 if any("error" in r for r in results) else 0
