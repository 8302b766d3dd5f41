"""`ser sweep FILE.yaml`: run a grid, as queued DVC experiments (default) or as submitit jobs, here or on SLURM."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Annotated, Any

import typer

from ser_cli.cli.errors import error_boundary
from ser_cli.cli.options import JsonOpt, QuietOpt
from ser_cli.runtime.errors import RunFailure, UserError

EXECUTORS = ("dvc", "local", "slurm")


@error_boundary
def sweep(
    file: Annotated[Path, typer.Argument(help="Sweep file (`name` and `set`: parameter key -> list of values) or grid "
                                              "file (`out`, `runs`, `seeds`, `train`, `evaluate`, `prepare`).")],
    executor: Annotated[str, typer.Option("--executor", metavar="dvc|local|slurm", help=(
        "dvc: queue DVC experiments (`set:` files); local: submitit jobs on this machine; slurm: one SLURM job "
        "array."))] = "dvc",
    jobs: Annotated[int, typer.Option("--jobs", min=1, metavar="N", help=(
        "local: jobs at once (each with one torch thread when more than 1)."))] = 2,
    only: Annotated[str, typer.Option("--only", metavar="NAMES", help="Comma-separated run names (grid file) or "
                                                                       "point names to run.")] = "",
    seeds: Annotated[str, typer.Option("--seeds", metavar="SEEDS", help="Comma-separated seeds to run (grid "
                                                                         "file).")] = "",
    out: Annotated[Path | None, typer.Option("--out", help="Output folder instead of the file's `out` (a grid's "
                                                           "runs go to OUT/runs).")] = None,
    no_prepare: Annotated[bool, typer.Option("--no-prepare", metavar="", help="Skip the grid's prepare "
                                                                             "commands.")] = False,
    partition: Annotated[str | None, typer.Option("--partition", metavar="NAME", help="slurm: partition.")] = None,
    gpus_per_node: Annotated[int | None, typer.Option("--gpus-per-node", metavar="N", help="GPUs per job.")] = None,
    timeout_min: Annotated[int | None, typer.Option("--timeout-min", metavar="MIN", help="Time limit per job, minutes "
                                                                          "(requeued past it).")] = None,
    array_parallelism: Annotated[int | None, typer.Option("--array-parallelism", metavar="N", help=(
        "slurm: jobs of the array at once."))] = None,
    option: Annotated[list[str] | None, typer.Option("--option", "-E", metavar="KEY=VALUE", help=(
        "Any other job option of the `executor:` section (mem_gb=32, account=lab, ...); repeatable."))] = None,
    wait: Annotated[bool, typer.Option("--wait", metavar="", help="slurm: wait for the array and write the "
                                                                  "report.")] = False,
    dry: Annotated[bool, typer.Option("--dry", metavar="", help="Print the commands, submit nothing.")] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Run every point of a grid: DVC experiments (`--executor dvc`, the default) or submitit jobs.

    dvc: one `dvc exp run --queue -S key=value ...` per point; run them with `dvc queue start --jobs N`, compare
    with `ser compare --exps --out REPORT`. local / slurm: each point one job (train then evaluate), logs in
    OUT/logs/NAME/, requeued from its checkpoint on preemption or time-out; finished points are skipped on a rerun;
    the report (`ser compare`) goes to OUT/report.
    """
    if executor not in EXECUTORS:
        raise UserError(f"--executor {executor}: one of {', '.join(EXECUTORS)}")
    if executor == "dvc":
        _dvc(file, dry, as_json)
        return
    flags = {"partition": partition, "gpus_per_node": gpus_per_node, "timeout_min": timeout_min,
             "array_parallelism": array_parallelism, **dict(_option(o) for o in option or [])}
    _jobs(file, executor, jobs, only, seeds, out, no_prepare, flags, wait, dry, as_json)


def _dvc(file: Path, dry: bool, as_json: bool) -> None:
    from ser_cli.runtime.yaml_files import load_yaml_file
    from ser_cli.sweep import load_sweep, queue
    from ser_cli.sweep_grid import is_grid_file

    if is_grid_file(load_yaml_file(file, "sweep file")):
        raise UserError(f"{file}: a grid file (runs:) runs with --executor local or slurm, not on DVC's queue")
    experiments = load_sweep(file)
    if not dry:
        queue(experiments, Path.cwd())
    if as_json:
        typer.echo(json.dumps({"queued": not dry, "experiments": [
            {"name": e.name, "set": {k: v for k, v in e.overrides}} for e in experiments]}, indent=2))
        return
    for e in experiments:
        typer.echo(shlex.join(e.command()) if dry else e.name)
    if not dry:
        typer.echo(f"queued {len(experiments)} experiments; run them: dvc queue start --jobs N")


def _option(item: str) -> tuple[str, Any]:
    import yaml

    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--option {item!r}: expected KEY=VALUE, e.g. --option mem_gb=32")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        return key.strip(), value


def _jobs(file: Path, executor: str, jobs: int, only: str, seeds: str, out: Path | None, no_prepare: bool,
          flags: dict[str, Any], wait: bool, dry: bool, as_json: bool) -> None:
    from ser_cli.runtime.progress import log
    from ser_cli.sweep_exec import executor_parameters, is_complete, load, report, run_sweep

    sweep = load(file, out)
    if no_prepare:
        sweep.prepare = []
    points = _select(sweep.points, only, seeds, sweep.grid)
    params = executor_parameters(executor, {**sweep.options, **{k: v for k, v in flags.items() if v is not None}})
    if dry:
        done = [p for p in points if is_complete(p, sweep.out / "logs")]
        _print_dry([p for p in points if p not in done], done, executor, params, as_json)
        return
    if executor == "local" and jobs > 1:
        os.environ["OMP_NUM_THREADS"] = "1"  # two processes on two cores beat one with two threads here
    status, failed = run_sweep(sweep, points, executor, params, jobs, wait)
    finished = executor == "local" or wait or all(s == "complete" for s in status.values())
    summary = report(sweep, points) if finished else None
    if as_json:
        typer.echo(json.dumps({"executor": executor, "out": str(sweep.out), "report": str(summary) if summary
                               else None, "points": status, "failed": failed}, indent=2))
    if failed:
        raise RunFailure(f"{len(failed)} of {len(points)} points failed; first: {failed[0]}")
    if summary is not None:
        log(f"report: {summary}")
    elif not finished:
        log(f"submitted; follow with squeue, logs in {sweep.out / 'logs'}/NAME/job.log; rerun this command when the "
            "array is done to skip finished points and write the report")


def _select(points: list[Any], only: str, seeds: str, grid: bool) -> list[Any]:
    if seeds and not grid:
        raise UserError("--seeds: for grid files; a `set:` sweep names its seeds in `set: train.seed`")
    names = {n for n in only.split(",") if n}
    wanted = {int(s) for s in seeds.split(",") if s.strip().isdigit()}
    if seeds and not wanted:
        raise UserError(f"--seeds {seeds!r}: comma-separated integers, e.g. --seeds 0,1")
    chosen = [p for p in points if (not names or (p.run if grid else p.name) in names)
              and (not wanted or p.seed in wanted)]
    if not chosen:
        raise UserError("no point of the sweep matches --only / --seeds")
    return chosen


def _print_dry(todo: list[Any], done: list[Any], executor: str, params: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"executor": executor, "parameters": params, "complete": [p.name for p in done],
                               "points": {p.name: [shlex.join(["ser", *c]) for c in p.commands] for p in todo}},
                              indent=2, default=str))
        return
    for point in done:
        typer.echo(f"# {point.name}: already complete")
    for point in todo:
        typer.echo(f"# {point.name}")
        for cmd in point.commands:
            typer.echo(shlex.join(["ser", *cmd]))
