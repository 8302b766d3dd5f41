"""Run an experiment grid of `ser` commands: `python -m experiments.run experiments/protocol.yaml [--jobs 2]`.

A grid file (YAML) names the commands that make its inputs (`prepare`, run in order), the runs (a name, the
`ser train` options and the seeds), how each final model is evaluated and the report (`ser compare --pairs`). Every
run becomes `ser train --out OUT/runs/NAME_sSEED` then `ser evaluate --out OUT/evals/NAME_sSEED`; `ser` skips a
finished output of the same inputs ("already complete, nothing to do") and resumes an interrupted run from its
checkpoint, so rerunning the same command after an interruption continues the grid where it stopped. Jobs run in
parallel, each with one torch thread (two processes on two cores beat one process with two threads on these small
tensors). Each job's stderr goes to `OUT/logs/`. The report is `OUT/report/` (the comparison with paired SER - plain
differences and their 95 % intervals over seeds). `--out DIR` runs the grid into a folder of its own instead of
its `out` (and `runs_dir`): the same grid again with other inputs (another saliency model, say) never mixes with or
resumes from the first one's runs.

Grid file:

    out: experiments/out/protocol          # where evals, logs and the report go
    runs_dir: experiments/out/runs         # where the runs go (default OUT/runs); grids that share it share
                                           # the runs of the same name (`ser train` finds them complete)
    prepare:                               # shell commands, run once each, in order, before the runs
      - ser data synth --out data/synth.h5
    train: [--data, data/synth.h5, --maps, data/maps.h5]   # options of every `ser train`
    evaluate: [--data, data/synth.h5, --set, evaluate.attacks=[]]   # options of every `ser evaluate`
    seeds: [0, 1, 2]
    runs:
      derpp: [--method, derpp]             # NAME: extra `ser train` options
      derpp_ser: [--method, derpp, --ser]
      derpp_long:                          # or extra options of both commands (a later option wins)
        train: [--method, derpp, --data, data/long.h5, --maps, data/long_maps.h5]
        evaluate: [--data, data/long.h5, --maps, data/long_maps.h5]
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


def parse_tag(tag: str) -> tuple[str, int] | None:
    """(run name, seed) of a grid folder's name `NAME_sSEED` (`Job.tag`), or None for any other name."""
    match = re.fullmatch(r"(.+)_s(\d+)", tag)
    return (match.group(1), int(match.group(2))) if match else None


@dataclass(frozen=True)
class Job:
    """One run of the grid: train, then evaluate."""

    name: str
    seed: int
    train: list[str]
    evaluate: list[str]
    out: Path
    runs_dir: Path

    @property
    def tag(self) -> str:
        return f"{self.name}_s{self.seed}"

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / self.tag

    @property
    def eval_dir(self) -> Path:
        return self.out / "evals" / self.tag

    def commands(self) -> list[list[str]]:
        seed = ["--seed", str(self.seed)]
        return [["ser", "-q", "train", "--out", str(self.run_dir), *self.train, *seed],
                ["ser", "-q", "evaluate", "--run", str(self.run_dir), "--out", str(self.eval_dir), *self.evaluate]]


def load_grid(path: Path, out: Path | None = None) -> tuple[dict, list[Job]]:
    """The grid file and its jobs, in file order, seed-major so early results cover every configuration.

    `out` replaces the file's `out` and its `runs_dir` (runs go to OUT/runs): the same grid run again into a
    folder of its own, e.g. with other inputs, never resumes from or mixes with the first one's runs.
    """
    grid = yaml.safe_load(Path(path).read_text())
    if out is not None:
        grid = {**{k: v for k, v in grid.items() if k != "runs_dir"}, "out": str(out)}
    out = Path(grid["out"])
    runs_dir = Path(grid.get("runs_dir", out / "runs"))
    jobs = []
    for seed in grid.get("seeds", [0]):
        for name, spec in grid["runs"].items():
            spec = spec if isinstance(spec, dict) else {"train": spec}
            train = [*grid.get("train", []), *spec.get("train", [])]
            evaluate = [*grid.get("evaluate", []), *spec.get("evaluate", [])]
            jobs.append(Job(name, seed, list(map(str, train)), list(map(str, evaluate)), out, runs_dir))
    return grid, jobs


def run_job(job: Job, env: dict[str, str]) -> tuple[Job, int, float]:
    """Train and evaluate one job; returns its exit code and wall seconds."""
    log = job.out / "logs" / f"{job.tag}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("a") as f:
        for cmd in job.commands():
            f.write(f"$ {shlex.join(cmd)}\n")
            f.flush()
            code = subprocess.call(cmd, stdout=f, stderr=f, env=env)
            if code != 0:
                return job, code, time.perf_counter() - start
    return job, 0, time.perf_counter() - start


def prepare(commands: list[str]) -> None:
    for cmd in commands:
        console.print(f"[dim]$ {cmd}[/dim]")
        if subprocess.call(cmd, shell=True) != 0:
            raise SystemExit(f"error: prepare step failed: {cmd}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("grid", type=Path, help="grid file, e.g. experiments/protocol.yaml")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (default 2: one per core)")
    parser.add_argument("--only", default="", help="comma-separated run names to run (default: all)")
    parser.add_argument("--seeds", default="", help="comma-separated seeds to run (default: the grid's)")
    parser.add_argument("--no-prepare", action="store_true", help="skip the prepare commands (inputs exist)")
    parser.add_argument("--out", type=Path, help="output folder instead of the grid's `out` (runs in OUT/runs)")
    args = parser.parse_args(argv)
    grid, jobs = load_grid(args.grid, args.out)
    if args.only:
        jobs = [j for j in jobs if j.name in set(args.only.split(","))]
    if args.seeds:
        jobs = [j for j in jobs if j.seed in {int(s) for s in args.seeds.split(",")}]
    if not args.no_prepare:
        prepare(grid.get("prepare", []))
    env = {**os.environ, "OMP_NUM_THREADS": "1" if args.jobs > 1 else os.environ.get("OMP_NUM_THREADS", "2")}
    failed = _run_all(jobs, env, args.jobs)
    evals = [str(j.eval_dir) for j in jobs if (j.eval_dir / "metrics.json").is_file()]
    if evals:
        subprocess.call(["ser", "compare", *evals, "--out", str(Path(grid["out"]) / "report"), "--pairs",
                         "--overwrite"])
    for job, code in failed:
        console.print(f"[red]failed[/red] {job.tag} (exit {code}); see {job.out / 'logs' / (job.tag + '.log')}")
    return 1 if failed else 0


def _run_all(jobs: list[Job], env: dict[str, str], n_jobs: int) -> list[tuple[Job, int]]:
    failed = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[last]}"))
    with Progress(*columns, console=console) as bar, ThreadPoolExecutor(n_jobs) as pool:
        task = bar.add_task("grid", total=len(jobs), last="")
        futures = [pool.submit(run_job, j, env) for j in jobs]
        for future in as_completed(futures):
            job, code, seconds = future.result()
            if code:
                failed.append((job, code))
            bar.update(task, advance=1, last=f"{job.tag} {'ok' if code == 0 else 'FAILED'} {seconds:.0f}s")
    return failed


if __name__ == "__main__":
    sys.exit(main())
