"""`python -m benchmarks gpu-check` (`make gpu-check`): what a first run on a CUDA card must learn, in one command
of under 8 minutes on one H100-class GPU, printed as a table and written to JSON (issue 33 item 2).

The checks, most important first, so that a spent time budget (`--budget-s`) costs the least:

1. environment: torch, CUDA and cuDNN versions, the card, its memory, bf16 support.
2. cuda-tests: the tests marked `cuda` (`pytest -m cuda`); without a device pytest skips them and says why.
3. end-to-end: a two-task SynthSal file (`ser data synth`), a saliency predictor (`ser pretrain-saliency`, on the
   CPU, shared), then the same `ser train` (DER++ + SER) + `ser evaluate` on the CPU (the reference) and on CUDA,
   once under the default precision (bf16 autocast on CUDA) and once with `train.precision=fp32`. Each CUDA run's
   class-IL final average accuracy must lie within `TOLERANCE_PP` percentage points of the CPU's (see there).
4. train-step: the `python -m benchmarks train-step` worker at 288x384, ResNet-18, DER++ +- SER, bf16, with
   `train.compile` off and then on: s/step (timed between device synchronisations), peak allocated
   (`torch.cuda.max_memory_allocated`), the step's FLOPs (`torch.utils.flop_counter`, forward and backward) and
   their rate as a fraction of the card's bf16 peak, measured in the same process as the best of 3 N x N
   `torch.matmul` (N 8192) between synchronisations.

Without CUDA every check that needs it is recorded as skipped, with the reason, and the rest runs (the CPU
reference of the end-to-end check), so the command runs unchanged on any machine. `--step-device cpu` runs the
train-step check on the CPU and `--tiny` shrinks every size, which is how the test suite runs this on CPU.
The exit status is 1 when a check failed or ran out of time, else 0 (skips included).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console
from rich.table import Table

from benchmarks.train_step import run_config
from benchmarks.train_step_worker import StepConfig
from ser_cli.runtime.atomic import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
# |CUDA - CPU| class-IL final average accuracy, percentage points, per CUDA precision: about twice the shift that
# the same kind of perturbation gave on the CPU (this check's end-to-end run, 2026-12-05, benchmarks/RESULTS.md):
# other fp32 kernels (channels-last) moved 26.25 to 28.33 (+2.08), bf16 autocast to 28.75 (+2.50). A broken CUDA
# path sits at chance (12.5 here), 13.75 below the CPU's 26.25: outside either tolerance.
TOLERANCE_PP = {"auto": 6.0, "fp32": 4.0}
ACCURACY = "class_il_final_avg_acc"
REPORTED = (ACCURACY, "task_il_final_avg_acc", "pgd_acc_eps_2", "saliency_cc")
MIN_SECONDS = 15  # a check that would get less than this of the budget is not started
NO_CUDA = "needs CUDA: torch.cuda.is_available() is False on this machine"

# the end-to-end check's parameters (a params file merged over the defaults): the demo's image size and backbone,
# two tasks of four classes; FULL for a card, TINY for the test suite on a CPU
FULL = {
    "data": {"synth": {"height": 32, "width": 48, "n_classes": 8, "train_per_class": 100, "test_per_class": 30}},
    "saliency": {"epochs": 1, "batch_size": 16, "precise_bn_batches": 5},
    "train": {"n_tasks": 2, "classes_per_task": 4, "buffer_size": 200},
    "evaluate": {"epsilons": ["2/255"], "pgd_steps": 5, "attack_images": 64, "batch_size": 64},
}
TINY = {
    "data": {"synth": {"height": 32, "width": 48, "n_classes": 4, "train_per_class": 16, "test_per_class": 8}},
    "saliency": {"epochs": 1, "batch_size": 8, "precise_bn_batches": 2},
    "train": {"n_tasks": 2, "classes_per_task": 2, "buffer_size": 16},
    "evaluate": {"epsilons": ["2/255"], "pgd_steps": 2, "attack_images": 8, "batch_size": 32},
}
PRETRAIN_PER_CLASS = {"full": 20, "tiny": 8}
STEP = {  # train-step: the paper's size and backbone; tiny for the test suite
    "full": StepConfig(backbone="resnet18", height=288, width=384, warmup=2, steps=5, buffer_size=2000, matmul_n=8192),
    "tiny": StepConfig(backbone="resnet18_reduced", height=32, width=48, warmup=1, steps=2, buffer_size=64,
                       matmul_n=256),
}
COMPILED_WARMUP = 3  # torch.compile compiles in the first warm-up steps; one more keeps a recompile out of the timing


@dataclass
class Check:
    """One line of the record: which check and case, ok / skipped / failed / timeout, why, and its figures."""

    check: str
    case: str
    status: str
    note: str = ""
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)


class Timeout(RuntimeError):
    """A subprocess of the check ran past the time budget."""


class Budget:
    """Seconds left of the whole command's time limit, handed to each subprocess as its timeout."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def spent(self) -> bool:
        return self.left() < MIN_SECONDS


# --------------------------------------------------------------------------------------------------- options


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks gpu-check", description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--tiny", action="store_true", help="Tiny sizes everywhere (the test suite's CPU run), not a measurement.")
    add("--step-device", default="cuda", help="Device of the train-step check (default cuda; cpu: run it anyway).")
    add("--compile", choices=["both", "on", "off"], default=None,
        help="train.compile in the train-step check (default both; off with --tiny: inductor takes minutes on a CPU).")
    add("--budget-s", type=float, default=450.0,
        help="Time limit of the whole check in seconds (default 450); what would start after it is recorded as "
        "skipped, a subprocess still running at it as timeout.")
    add("--out", type=Path, help="JSON record (default benchmarks/results/gpu_check.json, gpu_check_tiny.json with "
        "--tiny).")
    args = parser.parse_args(argv)
    args.scale = "tiny" if args.tiny else "full"
    args.compile = args.compile or ("off" if args.tiny else "both")
    args.out = args.out or ROOT / "benchmarks" / "results" / f"gpu_check{'_tiny' if args.tiny else ''}.json"
    if args.budget_s <= 0:
        parser.error("--budget-s must be positive")
    return args


# ------------------------------------------------------------------------------------------------ 1. environment


def environment() -> Check:
    """Versions and the card; without CUDA the note says which checks will be skipped."""
    cuda = torch.cuda.is_available()
    figures: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "cuda_available": cuda,
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "git_commit": git_commit(),
    }
    if cuda:
        props = torch.cuda.get_device_properties(0)
        figures |= {
            "device_count": torch.cuda.device_count(),
            "device_name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_gb": round(props.total_memory / 1e9, 1),
            "bf16_supported": torch.cuda.is_bf16_supported(),
        }
    note = "" if cuda else "no CUDA device: cuda-tests, the CUDA runs of end-to-end and train-step are skipped"
    return Check("environment", figures.get("device_name", "cpu only"), "ok", note, figures=figures)


def git_commit() -> str | None:
    done = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    return done.stdout.strip() or None


# -------------------------------------------------------------------------------------------------- 2. cuda tests


def cuda_test_files() -> list[Path]:
    """The test files that hold a test marked `cuda` (so pytest imports only those)."""
    return [p for p in sorted((ROOT / "tests").glob("test_*.py")) if "mark.cuda" in p.read_text()]


def cuda_tests(budget: Budget) -> Check:
    """`pytest -m cuda` on the files that have such tests; the outcome of each from its JUnit XML."""
    files = cuda_test_files()
    if not files:
        return Check("cuda-tests", "pytest -m cuda", "failed", "no test is marked cuda (tests/ lost its marks?)")
    with tempfile.TemporaryDirectory(prefix="ser-gpu-check-") as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider", "-m", "cuda",
               "--junitxml", str(xml), *(str(f.relative_to(ROOT)) for f in files)]
        start, timeout = time.perf_counter(), max(budget.left(), 1.0)
        try:
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, timeout=timeout)
        except subprocess.TimeoutExpired:
            return Check("cuda-tests", "pytest -m cuda", "timeout", f"ran past the time budget ({timeout:.0f} s)")
        seconds = time.perf_counter() - start
        outcomes = junit_outcomes(xml) if xml.is_file() else {}
    return test_check(outcomes, done, seconds)


def junit_outcomes(xml: Path) -> dict[str, tuple[str, str]]:
    """{test id: (passed / skipped / failed, message)} from a pytest JUnit XML file."""
    out = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        test = f"{case.get('classname')}::{case.get('name')}"
        child = next((c for c in case if c.tag in ("skipped", "failure", "error")), None)
        if child is None:
            out[test] = ("passed", "")
        else:
            out[test] = ("skipped" if child.tag == "skipped" else "failed", child.get("message") or "")
    return out


def test_check(outcomes: dict[str, tuple[str, str]], done: subprocess.CompletedProcess, seconds: float) -> Check:
    """The cuda-tests line: failed on any failure (or a pytest error), skipped when every test skipped."""
    counts = {k: sum(o == k for o, _ in outcomes.values()) for k in ("passed", "skipped", "failed")}
    figures = {**counts, "tests": {t: {"outcome": o, "message": m} for t, (o, m) in outcomes.items()}}
    if counts["failed"] or done.returncode not in (0, 5) or not outcomes:
        tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        return Check("cuda-tests", "pytest -m cuda", "failed", tail[0], seconds, figures)
    if counts["skipped"] == len(outcomes):
        reasons = sorted({m for _, m in outcomes.values()})
        return Check("cuda-tests", "pytest -m cuda", "skipped", "; ".join(reasons), seconds, figures)
    return Check("cuda-tests", "pytest -m cuda", "ok", f"{counts['passed']} passed", seconds, figures)


# ------------------------------------------------------------------------------------------------- 3. end to end


def ser(args: list[str], cwd: Path, budget: Budget) -> float:
    """Run one `ser` command in `cwd` with the check's params file; its wall seconds. Raises on failure."""
    cmd = [sys.executable, "-m", "ser_cli", "-q", *args, "--params", "params.yaml"]
    name = "ser " + " ".join(a for a in args[:2] if not a.startswith("-"))  # `ser data synth`, `ser train`
    start, timeout = time.perf_counter(), max(budget.left(), 1.0)
    try:
        done = subprocess.run(cmd, cwd=cwd, env={**os.environ, "SER_QUIET": "1"}, capture_output=True, text=True,
                              check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Timeout(f"{name}: ran past the time budget ({timeout:.0f} s left)") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise RuntimeError(f"{name}: {last}")
    return time.perf_counter() - start


def prepare(work: Path, scale: str, budget: Budget) -> dict[str, float]:
    """The check's params file, both data files and the saliency predictor (CPU); wall seconds of each command."""
    params = FULL if scale == "full" else TINY
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    per_class = f"data.synth.train_per_class={PRETRAIN_PER_CLASS[scale]}"
    return {
        "synth_pretrain": ser(["data", "synth", "--out", "pre.h5", "--set", "data.synth.purpose=pretrain",
                               "--set", per_class], work, budget),
        "synth": ser(["data", "synth", "--out", "synth.h5"], work, budget),
        "pretrain_saliency": ser(["pretrain-saliency", "--data", "pre.h5", "--out", "saliency", "--device", "cpu"],
                                 work, budget),
    }


def train_and_evaluate(work: Path, device: str, precision: str, budget: Budget) -> dict[str, Any]:
    """`ser train` (DER++ + SER, seed 0) then `ser evaluate` on `device`; the reported metrics and the timings."""
    name = f"{device}_{precision}"
    extra = [] if precision == "auto" else ["--set", f"train.precision={precision}"]
    train_s = ser(["train", "--data", "synth.h5", "--out", f"run_{name}", "--method", "derpp", "--ser",
                   "--saliency-model", "saliency/model.pt", "--device", device, "--seed", "0", *extra], work, budget)
    eval_s = ser(["evaluate", "--run", f"run_{name}", "--data", "synth.h5", "--out", f"eval_{name}", "--device",
                  device], work, budget)
    metrics = json.loads((work / f"eval_{name}" / "metrics.json").read_text())
    train = json.loads((work / f"run_{name}" / "metrics.json").read_text())
    return {
        **{k: metrics.get(k) for k in REPORTED},
        "train_steps": train.get("steps"),
        "train_wall_s": train_s,
        "evaluate_wall_s": eval_s,
        "train_peak_memory_bytes": train.get("peak_memory_bytes"),
    }


def compare(cpu: dict[str, Any], cuda: dict[str, Any], precision: str) -> tuple[str, str]:
    """(status, note) of a CUDA run against the CPU reference: ok when the class-IL accuracies agree within the
    tolerance of this precision."""
    tolerance = TOLERANCE_PP[precision]
    diff = cuda[ACCURACY] - cpu[ACCURACY]
    verdict = "ok" if abs(diff) <= tolerance else "failed"
    return verdict, f"class-IL {cuda[ACCURACY]:.2f} vs CPU {cpu[ACCURACY]:.2f}: {diff:+.2f} pp (tolerance {tolerance})"


def end_to_end(scale: str, budget: Budget) -> list[Check]:
    """The CPU reference, then the CUDA runs (default precision, fp32) compared with it."""
    cuda = torch.cuda.is_available()
    if budget.spent():
        return [Check("end-to-end", "cpu reference (fp32)", "skipped", "time budget spent")]
    with tempfile.TemporaryDirectory(prefix="ser-gpu-check-e2e-") as tmp:
        work, start = Path(tmp), time.perf_counter()
        try:
            prepared = prepare(work, scale, budget)
            cpu = train_and_evaluate(work, "cpu", "auto", budget) | {"prepare_wall_s": prepared}
        except RuntimeError as err:  # Timeout included
            status = "timeout" if isinstance(err, Timeout) else "failed"
            return [Check("end-to-end", "cpu reference (fp32)", status, str(err), time.perf_counter() - start)]
        cpu["chance"] = 100 / (FULL if scale == "full" else TINY)["data"]["synth"]["n_classes"]
        checks = [Check("end-to-end", "cpu reference (fp32)", "ok", f"class-IL {cpu[ACCURACY]:.2f} (chance "
                        f"{cpu['chance']:.1f})", time.perf_counter() - start, cpu)]
        for precision in ("auto", "fp32"):
            case = f"cuda {'bf16 (auto)' if precision == 'auto' else 'fp32'} vs cpu"
            checks.append(cuda_run(work, cpu, precision, case, budget) if cuda else Check("end-to-end", case,
                                                                                        "skipped", NO_CUDA))
    return checks


def cuda_run(work: Path, cpu: dict[str, Any], precision: str, case: str, budget: Budget) -> Check:
    """One CUDA train + evaluate, judged against the CPU reference."""
    if budget.spent():
        return Check("end-to-end", case, "skipped", "time budget spent")
    start = time.perf_counter()
    try:
        run = train_and_evaluate(work, "cuda", precision, budget)
    except RuntimeError as err:  # Timeout included
        status = "timeout" if isinstance(err, Timeout) else "failed"
        return Check("end-to-end", case, status, str(err), time.perf_counter() - start)
    status, note = compare(cpu, run, precision)
    run["diff_pp"] = run[ACCURACY] - cpu[ACCURACY]
    run["tolerance_pp"] = TOLERANCE_PP[precision]
    return Check("end-to-end", case, status, note, time.perf_counter() - start, run)


# ------------------------------------------------------------------------------------------------- 4. train step


def step_configs(scale: str, device: str, compile_: str) -> list[StepConfig]:
    """DER++ +- SER, eager first (the compiled ones take longest: they go last)."""
    compiles = {"both": (False, True), "on": (True,), "off": (False,)}[compile_]
    base = replace(STEP[scale], method="derpp", device=device)
    return [replace(base, ser=ser_, compile=c, warmup=max(base.warmup, COMPILED_WARMUP) if c else base.warmup)
            for c in compiles for ser_ in (False, True)]


def step_case(cfg: StepConfig) -> str:
    return (f"derpp{'+ser' if cfg.ser else ''} {cfg.backbone} {cfg.height}x{cfg.width} {cfg.device}"
            f"{' compiled' if cfg.compile else ''}")


def train_steps(scale: str, device: str, compile_: str, budget: Budget) -> list[Check]:
    """Each configuration in its own process (`benchmarks.train_step.run_config`); skipped without CUDA."""
    configs = step_configs(scale, device, compile_)
    if device.startswith("cuda") and not torch.cuda.is_available():
        return [Check("train-step", step_case(c), "skipped", f"{NO_CUDA} (--step-device cpu runs it on the CPU)")
                for c in configs]
    checks: list[Check] = []
    eager_flops: dict[bool, int] = {}  # per SER: the eager count, the reference for the compiled configuration
    for cfg in configs:
        if budget.spent():
            checks.append(Check("train-step", step_case(cfg), "skipped", "time budget spent"))
            continue
        start = time.perf_counter()
        result = run_config(cfg, timeout=budget.left())
        checks.append(step_check(cfg, result, eager_flops, time.perf_counter() - start))
    return checks


def step_check(cfg: StepConfig, r: dict[str, Any], eager_flops: dict[bool, int], seconds: float) -> Check:
    """The figures of one train-step result; failed on an error, non-finite losses or (CUDA) no bf16."""
    case = step_case(cfg)
    if "error" in r:
        status = "timeout" if r["error"].startswith("timed out") else "failed"
        return Check("train-step", case, status, r["error"], seconds, {"raw": r})
    if not cfg.compile:
        eager_flops[cfg.ser] = r["flop_per_step"]
    # the model's FLOPs do not depend on compilation: the eager count, when there is one, for both
    flops = eager_flops.get(cfg.ser, r["flop_per_step"])
    s = r["step_seconds"]["median"]
    peak = r["matmul_peak"]["gflop_per_s"] * 1e9
    memory = r["cuda_max_allocated_bytes"] if r["cuda_max_allocated_bytes"] is not None else r["peak_rss_bytes"]
    figures = {
        "s_per_step": s,
        "s_per_step_min_max": [r["step_seconds"]["min"], r["step_seconds"]["max"]],
        "peak_memory_gb": memory / 1e9,
        "peak_memory_kind": "cuda max allocated" if r["cuda_max_allocated_bytes"] is not None else "peak RSS",
        "gflop_per_step": flops / 1e9,
        "counted_gflop_per_step": r["flop_per_step"] / 1e9,
        "tflop_per_s": flops / s / 1e12,
        "matmul_peak_tflop_per_s": peak / 1e12,
        "matmul_peak_dtype": r["matmul_peak"]["dtype"],
        "fraction_of_matmul_peak": flops / s / peak,
        "precision": r["config"]["precision"],
        "raw": r,
    }
    problems = [] if r["losses_finite"] else ["non-finite losses"]
    if cfg.device.startswith("cuda") and r["config"]["precision"] != "bf16":
        problems.append(f"ran in {r['config']['precision']}, not bf16")
    note = "; ".join(problems) or (f"{s:.3g} s/step, {100 * figures['fraction_of_matmul_peak']:.1f} % of the "
                                   f"{figures['matmul_peak_dtype']} matmul peak")
    return Check("train-step", case, "failed" if problems else "ok", note, seconds, figures)


# ---------------------------------------------------------------------------------------------------- the record


def summary(check: Check) -> str:
    """The figures a reader looks at first, as one short cell."""
    f = check.figures
    if check.check == "train-step" and "s_per_step" in f:
        return (f"{f['s_per_step']:.3g} s/step, {f['peak_memory_gb']:.2f} GB ({f['peak_memory_kind']}), "
                f"{f['gflop_per_step']:,.0f} GFLOP/step, {f['tflop_per_s']:.2f} TFLOP/s = "
                f"{100 * f['fraction_of_matmul_peak']:.1f} % of {f['matmul_peak_tflop_per_s']:.1f} "
                f"({f['matmul_peak_dtype']} matmul)")
    if check.check == "end-to-end" and ACCURACY in f:
        return (f"class-IL {f[ACCURACY]:.2f}, task-IL {f['task_il_final_avg_acc']:.2f}, "
                f"train {f['train_wall_s']:.0f} s, evaluate {f['evaluate_wall_s']:.0f} s")
    if check.check == "cuda-tests":
        return ", ".join(f"{f.get(k, 0)} {k}" for k in ("passed", "skipped", "failed"))
    if check.check == "environment":
        return f"torch {f['torch']}, CUDA {f['cuda_runtime']}, cuDNN {f['cudnn']}, {f['cpu_count']} CPUs"
    return ""


def table(checks: list[Check], seconds: float) -> Table:
    out = Table(title=f"ser GPU check ({seconds:.0f} s)")
    for header in ("check", "case", "status", "figures", "s", "note"):
        out.add_column(header, justify="right" if header == "s" else "left")
    for c in checks:
        out.add_row(c.check, c.case, c.status, summary(c), f"{c.seconds:.0f}", c.note)
    return out


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    budget, start, checks = Budget(args.budget_s), time.perf_counter(), []
    report = {"benchmark": "gpu-check", "command": " ".join(["python -m benchmarks gpu-check", *argv]),
              "host": platform.node(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "tolerance_pp": TOLERANCE_PP, "checks": checks}
    steps = (
        lambda: [environment()],
        lambda: [cuda_tests(budget)],
        lambda: end_to_end(args.scale, budget),
        lambda: train_steps(args.scale, args.step_device, args.compile, budget),
    )
    for step in steps:
        checks.extend(step())
        write_json_atomic(args.out, {**report, "checks": [asdict(c) for c in checks],
                                     "seconds": time.perf_counter() - start})
    Console(width=None if sys.stdout.isatty() else 200).print(table(checks, time.perf_counter() - start))
    skipped = [c for c in checks if c.status == "skipped"]
    if skipped:
        print(f"skipped {len(skipped)} check(s): " + "; ".join(f"{c.check} {c.case}: {c.note}" for c in skipped))
    print(f"results: {args.out}")
    return 1 if any(c.status in ("failed", "timeout") for c in checks) else 0
