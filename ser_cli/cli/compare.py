"""`ser compare`: several evaluations side by side, seeds of one configuration grouped as mean +- std."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ser_cli.cli.errors import error_boundary
from ser_cli.cli.options import JsonOpt, OverwriteOpt, QuietOpt
from ser_cli.runtime.errors import UserError

WIDE = 200


@error_boundary
def compare(
    evals: Annotated[list[Path] | None, typer.Argument(
        metavar="EVAL", help="Evaluation folders (ser evaluate --out EVAL), any number.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Report folder to write, e.g. reports/compare.")] = ...,
    exps: Annotated[bool, typer.Option("--exps", metavar="", help="Also compare the evaluations of this git "
                                       "repository's DVC experiments (ser sweep + dvc queue start), read from "
                                       "their commits; --exp NAME to take some only.")] = False,
    exp_names: Annotated[list[str] | None, typer.Option("--exp", metavar="NAME", help="A DVC experiment to take "
                                                         "(repeatable; implies --exps).")] = None,
    as_json: JsonOpt = False,
    overwrite: OverwriteOpt = False,
    pairs: Annotated[bool, typer.Option("--pairs", metavar="", help="Also print each SER group's paired difference "
                                        "from its plain partner (mean and 95 % interval over seeds).")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Compare evaluations: a table on stdout, REPORT/report.md, REPORT/summary.json and two figures.

    Runs with the same config hash on the same data file are grouped (mean +- std over seeds); a run on a
    spurious dataset shows its drop in class-IL accuracy from the same configuration on the clean dataset.
    """
    from stages import compare as stage

    evals = list(evals or [])
    if exps or exp_names:
        from ser_cli.report.dvc_experiments import extract_evaluations

        evals += extract_evaluations(Path.cwd(), stage.experiments_folder(out), exp_names or None)
    if not evals:
        raise UserError("ser compare: name evaluation folders, or --exps for the DVC experiments' evaluations")
    result = stage.run(evals, out, overwrite)
    if as_json:
        typer.echo(json.dumps({"out": str(result.out), **result.summary}, indent=2, sort_keys=True))
        return
    from rich.console import Console

    from ser_cli.cli.render import stdout_console

    # Piped or redirected: Rich would wrap at 80 columns; a log or file reads better with whole rows.
    console = stdout_console if stdout_console.is_terminal else Console(width=WIDE)
    console.print(result.table)
    for line in result.guide:
        typer.echo(line)
    if pairs:
        console.print(result.pairs)
    typer.echo(str(result.out))
