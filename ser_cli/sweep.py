"""`ser sweep FILE.yaml`: a grid of parameter values as queued DVC experiments (the pipeline of `dvc.yaml`).

`ser` manages no processes here: each grid point becomes `dvc exp run --queue -n NAME -S ++key=value ...`, and DVC's
queue runs them (`dvc queue start --jobs N`; with several GPUs, `SER_DEVICE=cuda:auto` gives each job its own).
Finished experiments are commits DVC keeps; `ser compare --exps --out REPORT` compares their evaluations.
With `--executor local|slurm` the same points run as submitit jobs instead (`ser_cli.sweep_exec`), which also runs
the grid files of `ser_cli.sweep_grid`.

Sweep file:

    name: seeds               # experiment names: NAME-<key><value>-... (letters, digits, '-', '_' and '.')
    set:                      # every combination of these values is one experiment
      train.seed: [0, 1, 2]
      train.buffer_size: [200, 500]
    out: sweeps/seeds         # --executor local|slurm only: points go to OUT/NAME/ (default sweeps/NAME)
    executor: {}              # --executor local|slurm only: job options (`ser_cli.sweep_exec`)
"""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from ser_cli.config_loader import load_params, load_yaml_file
from ser_cli.runtime.errors import RunFailure, UserError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


@dataclass(frozen=True)
class Experiment:
    """One grid point: its name and its `-S key=value` overrides."""

    name: str
    overrides: tuple[tuple[str, object], ...]

    def command(self) -> list[str]:
        # `++key=value` (Hydra's add-or-override): a key params.yaml leaves at its default is set too
        sets = [x for key, value in self.overrides for x in ("-S", f"++{key}={yaml_value(value)}")]
        return ["dvc", "exp", "run", "--queue", "-n", self.name, *sets]


def yaml_value(value: object) -> str:
    """A value as DVC's `-S` parses it (YAML): lists and strings survive the round trip."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def load_sweep(path: Path) -> list[Experiment]:
    """The experiments of a sweep file, in grid order (the last key varies fastest).

    Raises:
        UserError: unreadable file, a missing or malformed `name` / `set`, an empty value list.
    """
    spec = load_yaml_file(path, "sweep file")
    if not isinstance(spec, dict) or set(spec) - {"name", "set", "out", "executor"}:
        raise UserError(f"{path}: a sweep file has the keys `name`, `set`, `out` and `executor` only (a grid file "
                        "has `runs`)")
    name, grid = spec.get("name"), spec.get("set")
    if not isinstance(name, str) or not NAME.match(name):
        raise UserError(f"{path}: name: letters, digits, '-', '_' and '.' (got {name!r})")
    if not isinstance(grid, dict) or not grid:
        raise UserError(f"{path}: set: a mapping of parameter keys (section.key) to lists of values")
    for key, values in grid.items():
        if not isinstance(key, str) or not KEY.match(key):
            raise UserError(f"{path}: set: {key!r} is not a parameter key like train.seed")
        if not isinstance(values, list) or not values:
            raise UserError(f"{path}: set.{key}: a non-empty list of values (got {values!r})")
    keys = list(grid)
    experiments = [Experiment(_name(name, keys, combo), tuple(zip(keys, combo, strict=True)))
                   for combo in itertools.product(*(grid[k] for k in keys))]
    for exp in experiments:  # all of them before anything is queued: a bad point fails now, not inside its run
        validate(path, exp)
    return experiments


def validate(path: Path, exp: Experiment) -> None:
    """UserError naming the sweep file, the experiment and the key unless `params.yaml` (of the current folder,
    the one DVC runs) with the experiment's values passes the same validation every stage runs (`load_params`)."""
    load_params(None, None, {key: (f"{path}: {exp.name}", value) for key, value in exp.overrides})


def _name(prefix: str, keys: list[str], values: tuple) -> str:
    parts = [f"{key.rsplit('.', 1)[-1]}{re.sub(r'[^A-Za-z0-9.]+', '_', str(value)).strip('_')}"
             for key, value in zip(keys, values, strict=True)]
    return "-".join([prefix, *parts])


def queue(experiments: list[Experiment], repo: Path) -> None:
    """Queue every experiment with `dvc exp run --queue` in `repo`.

    Raises:
        UserError: dvc is not installed, or `repo` is not a DVC repository with a git commit.
        RunFailure: dvc refused an experiment (its last line).
    """
    if shutil.which("dvc") is None:
        raise UserError("ser sweep: dvc is not installed (pip install dvc, or `make setup`)")
    if not (repo / "dvc.yaml").is_file():
        raise UserError(f"ser sweep: {repo} has no dvc.yaml; run it in the repository of the pipeline")
    for exp in experiments:
        done = subprocess.run(exp.command(), cwd=repo, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines() or [f"exit {done.returncode}"]
            raise RunFailure(f"ser sweep: dvc could not queue {exp.name}: {lines[-1]}")
