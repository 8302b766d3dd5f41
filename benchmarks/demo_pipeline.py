"""`python -m benchmarks demo`: how long the demo pipeline (`dvc repro` of dvc.yaml, what `make demo` runs after the
set-up) takes at one or more commits, per stage, side by side (issue 33 item 3).

Each commit is cloned into its own folder under `--workdir` and its pipeline runs there from scratch, one commit after
the other, with this checkout's virtual environment (the clone's code first on `PYTHONPATH`, so each commit runs its
own `ser_cli` and `stages`); the install is not timed. A stage's time runs from DVC's "Running stage" line to the
next one (or to the end), so it includes the `ser` process's start-up and DVC's own bookkeeping. Compare commits
only from one run on a quiet machine: the figures are wall-clock seconds.

    python -m benchmarks demo --commits 19dfad0,HEAD --workdir /tmp/demo-bench --out demo.json
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ser_cli.runtime.atomic import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
STAGE_LINE = re.compile(r"Running stage '([^']+)'")
# the demo's stages by kind, in pipeline order: the table's rows after the per-stage ones
KINDS = ("synth", "pretrain_saliency", "precompute", "train", "evaluate", "compare")


def stage_seconds(timed_lines: Iterable[tuple[float, str]], end: float) -> dict[str, float]:
    """Seconds per stage from (seconds since start, line) pairs of `dvc repro`'s output: a stage runs from its
    "Running stage 'NAME':" line to the next such line, the last one to `end`. Stages in the order they ran."""
    starts = [(t, match.group(1)) for t, line in timed_lines if (match := STAGE_LINE.search(line))]
    ends = [t for t, _ in starts[1:]] + [end] if starts else []
    return {name: round(stop - start, 1) for (start, name), stop in zip(starts, ends, strict=True)}


def kind_seconds(stages: dict[str, float]) -> dict[str, float]:
    """Seconds per kind of stage (`train@0` and `train@1` are both "train"; `synth_cl` is "synth")."""
    totals: dict[str, float] = {}
    for name, seconds in stages.items():
        kind = next((k for k in KINDS if name.split("@")[0].startswith(k)), name)
        totals[kind] = round(totals.get(kind, 0.0) + seconds, 1)
    return totals


def run_demo(commit: str, workdir: Path, repo: Path = ROOT) -> dict[str, object]:
    """Clone `repo` (this repository) at `commit` into `workdir`, run its `dvc repro`, return the stage times.

    Raises:
        ValueError: `commit` names no commit of `repo`.
        RuntimeError: the pipeline failed (the last lines of its output in the message).
    """
    found = subprocess.run(["git", "rev-parse", "--short", "--verify", "--quiet", f"{commit}^{{commit}}"], cwd=repo,
                           capture_output=True, text=True, check=False)
    if found.returncode != 0:
        raise ValueError(f"--commits: {commit!r} is not a commit of {repo}")
    sha = found.stdout.strip()
    clone = workdir / f"demo_{sha}"
    subprocess.run(["rm", "-rf", str(clone)], check=True)
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    subprocess.run(["git", "checkout", "-q", sha], cwd=clone, check=True)
    venv_bin = Path(sys.executable).parent
    env = {**os.environ, "PYTHONPATH": str(clone), "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
           "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1"}
    if not (clone / ".dvc").is_dir():
        subprocess.run([str(venv_bin / "dvc"), "init", "-q"], cwd=clone, env=env, check=True)
    start, timed = time.perf_counter(), []
    with subprocess.Popen([str(venv_bin / "dvc"), "repro"], cwd=clone, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout or ():
            timed.append((time.perf_counter() - start, line.rstrip()))
    total = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "; ".join(line for _, line in timed[-5:])
        raise RuntimeError(f"dvc repro at {sha} failed (exit {proc.returncode}): {tail}")
    stages = stage_seconds(timed, total)
    return {"commit": sha, "folder": str(clone), "total_s": round(total, 1), "stages_s": stages,
            "kinds_s": kind_seconds(stages)}


def table(results: Sequence[dict[str, object]]) -> Table:
    """Seconds per stage (rows) and commit (columns), then per kind of stage and the total."""
    out = Table(title="demo pipeline (dvc repro), wall-clock seconds")
    out.add_column("stage")
    for result in results:
        out.add_column(str(result["commit"]), justify="right")
    stages = list(dict.fromkeys(name for r in results for name in r["stages_s"]))  # type: ignore[union-attr]
    kinds = list(dict.fromkeys(name for r in results for name in r["kinds_s"]))  # type: ignore[union-attr]
    for key, names in (("stages_s", stages), ("kinds_s", kinds)):
        for name in names:
            label = name if key == "stages_s" else f"all {name}"
            out.add_row(label, *(_seconds(r[key].get(name)) for r in results))  # type: ignore[union-attr]
        out.add_section()
    out.add_row("total", *(_seconds(r["total_s"]) for r in results))  # type: ignore[arg-type]
    return out


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commits", default="HEAD", help="Comma-separated commits to time, in this order "
                        "(default HEAD; committed code only: uncommitted changes are not in a clone).")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "ser-demo-bench",
                        help="Folder for the clones (default: ser-demo-bench in the temporary folder; each pipeline "
                        "needs ~150 MB).")
    parser.add_argument("--out", type=Path, default=None, help="Also write the results as JSON here.")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for commit in args.commits.split(","):
        try:
            results.append(run_demo(commit.strip(), args.workdir.resolve()))
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except (RuntimeError, subprocess.CalledProcessError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    if args.out is not None:
        write_json_atomic(args.out, {"results": results, "torch_threads_env": os.environ.get("OMP_NUM_THREADS")})
    Console().print(table(results))
    return 0
