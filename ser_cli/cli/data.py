"""`ser data ...`: make the built-in benchmark, inspect data files (and import real datasets)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ser_cli.cli.errors import error_boundary
from ser_cli.cli.options import JsonOpt, ParamsOpt, SeedOpt, SetOpt, build_params

app = typer.Typer(help="Make, import or inspect datasets (HDF5 data files).", no_args_is_help=True)


@app.command("synth")
@error_boundary
def synth(
    out: Annotated[Path, typer.Option("--out", help="Data file to write, e.g. data/synth.h5.")] = Path(
        "data/synth.h5"),
    params: ParamsOpt = None,
    set_: SetOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Generate SynthSal, the built-in benchmark (parameters under data.synth)."""
    from stages import synth as stage

    cfg = build_params(params, set_, seed, "data.synth.seed").data.synth
    path = stage.run(cfg, out)
    typer.echo(str(path))


@app.command("info")
@error_boundary
def info(
    file: Annotated[Path, typer.Argument(help="A data file written by ser.")],
    as_json: JsonOpt = False,
) -> None:
    """Show a data file's splits, shapes, classes and provenance."""
    from ser_cli.data.store import DataFile

    details = DataFile(file).info()
    if as_json:
        typer.echo(json.dumps(details, indent=2))
        return
    from ser_cli.cli.render import print_data_info

    print_data_info(details)
