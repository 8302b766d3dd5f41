"""The grid points of a `set:` sweep file run outside DVC (`ser sweep FILE --executor local|slurm`).

A point runs what DVC's queue runs for that experiment, minus DVC: the `train` and `evaluate` stages of the
pipeline's `dvc.yaml` (matrix expanded, in file order), each command's `--out` and `--run` folder moved under
`OUT/<point name>/` so that points never share a folder, and the point's parameter values appended as
`--set key=value` (what `dvc exp run -S` writes into `params.yaml` for every stage). The stages before them (data,
saliency model, maps) are not run: their outputs must exist, which is checked before anything is submitted, and a
sweep may only vary the parameters the two stages read (`params:` in `dvc.yaml`); vary the others with
`--executor dvc`, which reruns the whole pipeline.
"""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path
from typing import Any

from ser_cli.runtime.errors import UserError
from ser_cli.runtime.yaml_files import load_yaml_file
from ser_cli.sweep import Experiment, yaml_value
from ser_cli.sweep_grid import GridPoint

STAGES = ("train", "evaluate")
MOVED = ("--out", "--run")  # the options naming a point's own folders
ITEM = re.compile(r"\$\{item\.([A-Za-z_][A-Za-z0-9_]*)\}")


def pipeline_points(experiments: list[Experiment], out: Path, repo: Path) -> list[GridPoint]:
    """One point per experiment: the stages' commands (arguments of `ser`) with the experiment's overrides.

    Raises:
        UserError: no `dvc.yaml` with `train` and `evaluate` stages, a command that is not `ser ...`, a parameter
            those stages do not read, or a missing input of theirs.
    """
    stages = _stages(repo / "dvc.yaml")
    read = [p for stage in stages for p in stage["params"]]
    for exp in experiments:
        for key, _ in exp.overrides:
            if not any(key == p or key.startswith(f"{p}.") for p in read):
                raise UserError(f"{exp.name}: {key}: not read by the train or evaluate stage; --executor local and "
                                "slurm run only those two (vary it with --executor dvc)")
    commands = [(stage["name"], cmd) for stage in stages for cmd in stage["cmds"]]
    made = {Path(v) for _, cmd in commands for v in _values(cmd, ("--out",))}
    for stage in stages:
        for dep in stage["deps"]:
            if not any(Path(dep) == m or m in Path(dep).parents for m in made) and not (repo / dep).exists():
                raise UserError(f"{dep}: an input of the {stage['name']} stage is missing; make the pipeline's "
                                "inputs first (dvc repro precompute)")
    return [_point(exp, out, commands) for exp in experiments]


def _point(exp: Experiment, out: Path, commands: list[tuple[str, list[str]]]) -> GridPoint:
    home = out / exp.name
    sets = [x for key, value in exp.overrides for x in ("--set", f"{key}={yaml_value(value)}")]
    moved = [(stage, _move(cmd, home)) for stage, cmd in commands]
    outputs = tuple(Path(v) for _, cmd in moved for v in _values(cmd, ("--out",)))
    evals = tuple(Path(v) for stage, cmd in moved if stage == "evaluate" for v in _values(cmd, ("--out",)))
    return GridPoint(exp.name, tuple((*cmd, *sets) for _, cmd in moved), outputs, evals)


def _stages(path: Path) -> list[dict[str, Any]]:
    """The train and evaluate stages: {"name", "cmds" (matrix expanded, `ser` dropped), "params", "deps"}."""
    if not path.is_file():
        raise UserError(f"{path}: not found; run `ser sweep` in the repository of the pipeline")
    stages = (load_yaml_file(path, "pipeline file") or {}).get("stages") or {}
    found = []
    for name in STAGES:
        stage = stages.get(name)
        if not isinstance(stage, dict) or not isinstance(stage.get("cmd"), str):
            raise UserError(f"{path}: stages.{name}: a stage with one `ser {name} ...` command is needed")
        items = _matrix(stage.get("matrix") or {}, path, name)
        cmds = [_command(ITEM.sub(lambda m, item=item: str(item[m.group(1)]), stage["cmd"]), path, name)
                for item in items]
        deps = sorted({ITEM.sub(lambda m, item=item: str(item[m.group(1)]), str(d))
                       for item in items for d in stage.get("deps", [])})
        params = [p for p in stage.get("params", []) if isinstance(p, str)]
        found.append({"name": name, "cmds": cmds, "params": params, "deps": deps})
    return found


def _matrix(matrix: dict[str, Any], path: Path, name: str) -> list[dict[str, Any]]:
    if not isinstance(matrix, dict) or not all(isinstance(v, list) and v for v in matrix.values()):
        raise UserError(f"{path}: stages.{name}.matrix: lists of values")
    keys = list(matrix)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(matrix[k] for k in keys))]


def _command(cmd: str, path: Path, name: str) -> list[str]:
    words = shlex.split(cmd)
    if "${" in cmd or not words or words[0] != "ser":
        raise UserError(f"{path}: stages.{name}: `{cmd}` is not a plain `ser ...` command (only ${{item.*}} "
                        "is expanded outside DVC)")
    return words[1:]


def _move(cmd: list[str], home: Path) -> list[str]:
    """`cmd` with the folders after `--out` / `--run` (or `--out=`) moved under `home`."""
    moved, after = [], False
    for word in cmd:
        option, eq, value = word.partition("=")
        if after:
            word, after = str(home / word), False
        elif option in MOVED and eq:
            word = f"{option}={home / value}"
        elif word in MOVED:
            after = True
        moved.append(word)
    return moved


def _values(cmd: list[str] | tuple[str, ...], options: tuple[str, ...]) -> list[str]:
    """The values of `options` in `cmd` (`--out X` or `--out=X`)."""
    found = []
    for i, word in enumerate(cmd):
        option, eq, value = word.partition("=")
        if option in options and eq:
            found.append(value)
        elif word in options and i + 1 < len(cmd):
            found.append(cmd[i + 1])
    return found
