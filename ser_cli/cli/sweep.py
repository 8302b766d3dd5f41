"""`ser sweep FILE.yaml`: queue a grid of DVC experiments of this repository's pipeline (DVC runs them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ser_cli.cli.errors import error_boundary
from ser_cli.cli.options import JsonOpt, QuietOpt


@error_boundary
def sweep(
    file: Annotated[Path, typer.Argument(help="Sweep file: `name` and `set` (parameter key -> list of values).")],
    dry: Annotated[bool, typer.Option("--dry", metavar="", help="Print the dvc commands, queue nothing.")] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Queue one DVC experiment per combination of the values in FILE (dvc exp run --queue -S key=value ...).

    Run them with `dvc queue start --jobs N` (several GPUs: SER_DEVICE=cuda:auto gives each job its own), follow
    with `dvc queue status`, compare with `ser compare --exps --out REPORT`.
    """
    import shlex

    from ser_cli.sweep import load_sweep, queue

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
