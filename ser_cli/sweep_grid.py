"""Experiment grid files for `ser sweep GRID.yaml --executor local|slurm`: runs x seeds, each a train then an evaluate.

A grid file names the commands that make its inputs (`prepare`, shell commands run once, in order, by the
submitting process), the runs (a name and its `ser train` options), the seeds and how each final model is
evaluated. Every (run, seed) is one grid point: `ser train --out RUNS_DIR/NAME_sSEED` then
`ser evaluate --run RUNS_DIR/NAME_sSEED --out OUT/evals/NAME_sSEED`. Keys the runner does not read (`contrasts`, the
analysis stated before a grid runs) are allowed and ignored.

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
    executor:                              # optional: SLURM (and local) job options, see `ser_cli.sweep_exec`
      partition: gpu
      gpus_per_node: 1
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ser_cli.runtime.errors import UserError

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parse_tag(tag: str) -> tuple[str, int] | None:
    """(run name, seed) of a grid folder's name `NAME_sSEED` (`GridPoint.name`), or None for any other name."""
    match = re.fullmatch(r"(.+)_s(\d+)", tag)
    return (match.group(1), int(match.group(2))) if match else None


@dataclass(frozen=True)
class GridPoint:
    """One (run, seed) of a grid file: its name, its commands (`ser` arguments) and the folders they write."""

    name: str
    commands: tuple[tuple[str, ...], ...]
    outputs: tuple[Path, ...]  # the folders whose `metrics.json` says the point is finished
    evals: tuple[Path, ...]  # the evaluations among them (what `ser compare` reads)
    run: str = ""
    seed: int | None = None


def is_grid_file(spec: object) -> bool:
    """A grid file has `runs`; a `set:` sweep file does not."""
    return isinstance(spec, dict) and "runs" in spec


def grid_points(spec: dict[str, Any], path: Path, out: Path | None = None) -> tuple[Path, list[GridPoint]]:
    """The output folder and the points of grid file `spec` (read from `path`), seed-major (early results cover
    every configuration).

    `out` replaces the file's `out` and its `runs_dir` (runs go to OUT/runs): the same grid run again into a folder of
    its own, e.g. with other inputs, never resumes from or mixes with the first one's runs.

    Raises:
        UserError: a missing `out` or `runs`, a malformed option list, a bad run name or seed.
    """
    if out is None and not isinstance(spec.get("out"), str):
        raise UserError(f"{path}: out: the grid's output folder (a path)")
    runs = spec.get("runs")
    if not isinstance(runs, dict) or not runs:
        raise UserError(f"{path}: runs: a mapping of run names to `ser train` options")
    if out is not None:
        runs_dir = Path(out) / "runs"
    else:
        out = Path(spec["out"])
        runs_dir = Path(str(spec.get("runs_dir", out / "runs")))
    seeds = spec.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise UserError(f"{path}: seeds: a non-empty list of seeds (integers >= 0)")
    train, evaluate = _options(spec, "train", path), _options(spec, "evaluate", path)
    points = []
    for seed in seeds:
        for name, options in runs.items():
            if not isinstance(name, str) or not RUN_NAME.match(name):
                raise UserError(f"{path}: runs: {name!r}: letters, digits, '-', '_' and '.'")
            per_run = options if isinstance(options, dict) else {"train": options}
            points.append(_point(name, seed, out, runs_dir, [*train, *_options(per_run, "train", path)],
                                 [*evaluate, *_options(per_run, "evaluate", path)]))
    return out, points


def _point(name: str, seed: int, out: Path, runs_dir: Path, train: list[str], evaluate: list[str]) -> GridPoint:
    tag = f"{name}_s{seed}"
    run_dir, eval_dir = runs_dir / tag, out / "evals" / tag
    commands = (("-q", "train", "--out", str(run_dir), *train, "--seed", str(seed)),
                ("-q", "evaluate", "--run", str(run_dir), "--out", str(eval_dir), *evaluate))
    return GridPoint(tag, commands, (run_dir, eval_dir), (eval_dir,), name, seed)


def _options(spec: dict[str, Any], key: str, path: Path) -> list[str]:
    """`spec[key]`: a list of command-line options (numbers become strings), [] when absent."""
    value = spec.get(key, [])
    if not isinstance(value, list) or any(isinstance(v, dict | list) or v is None for v in value):
        raise UserError(f"{path}: {key}: a list of command-line options, e.g. [--method, er]")
    return [str(v) for v in value]
