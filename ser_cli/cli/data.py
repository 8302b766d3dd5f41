"""`ser data ...`: make the built-in benchmark, inspect data files (and import real datasets)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ser_cli.cli.errors import error_boundary
from ser_cli.cli.help_format import PlainHelpCommand, PlainHelpGroup
from ser_cli.cli.options import JsonOpt, OverwriteOpt, ParamsOpt, QuietOpt, SeedOpt, SetOpt, build_params

app = typer.Typer(help="Make, import or inspect datasets (HDF5 data files).", no_args_is_help=True,
                  cls=PlainHelpGroup)


@app.command("synth", cls=PlainHelpCommand)
@error_boundary
def synth(
    out: Annotated[Path, typer.Option("--out", help="Data file to write, e.g. data/synth.h5.")] = Path(
        "data/synth.h5"),
    params: ParamsOpt = None,
    set_: SetOpt = None,
    seed: SeedOpt = None,
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Generate SynthSal, the built-in benchmark (parameters under data.synth)."""
    from stages import synth as stage

    cfg = build_params(params, set_, seed, "data.synth.seed").data.synth
    _echo_written(stage.run(cfg, out, overwrite), as_json)


@app.command("info", cls=PlainHelpCommand)
@error_boundary
def info(
    file: Annotated[Path, typer.Argument(help="A data file or a maps file written by ser.")],
    verify: Annotated[bool, typer.Option("--verify", metavar="", help="Also check every dataset against the "
                                         "sha256 stored when the file was written (reads the whole file).")] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Show a data file's splits, shapes, classes and provenance (a maps file's method, sizes and origin)."""
    from ser_cli.cli.render import print_data_info, print_maps_info
    from ser_cli.data.schema import MAPS_KIND, file_kind

    if file_kind(file) == MAPS_KIND:
        from ser_cli.data.maps import MapsFile

        details, show = MapsFile(file, verify=verify).info(), print_maps_info
    else:
        from ser_cli.data.store import DataFile

        details, show = DataFile(file, verify=verify).info(), print_data_info
    if as_json:
        typer.echo(json.dumps(details, indent=2))
        return
    show(details)
    if verify:
        typer.echo(f"checksums: {details['checksums']}" + (" (written before ser stored checksums)"
                                                            if details["checksums"] == "absent" else ""))


@app.command("import", cls=PlainHelpCommand)
@error_boundary
def import_(
    fmt: Annotated[str, typer.Argument(metavar="FORMAT", help="salicon, mit1003, ser-layout or imagefolder.")],
    src: Annotated[Path, typer.Argument(metavar="SRC", help="Root folder of the dataset, in its published layout.")],
    out: Annotated[Path, typer.Option("--out", help="Data file to write, e.g. data/salicon.h5.")],
    class_order: Annotated[str | None, typer.Option(
        "--class-order", metavar="ORDER", help="Labels of the classes: fg-imagenet, mini-imagenet, or a YAML file "
        "(name -> label, or a list). Default: sorted folder names.")] = None,
    storage: Annotated[str | None, typer.Option(
        "--storage", metavar="raw|encoded", help="raw (decoded pixels, fast reads) or encoded (PNG bytes, small). "
        "Default: data.storage.")
    ] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=0, metavar="N", help="Decoding worker processes (0: in process). Default: data.workers.")
    ] = None,
    limit_per_class: Annotated[int | None, typer.Option(
        "--limit-per-class", min=1, metavar="N", help="Import only the first N images of each class and split (a "
        "quick trial).")
    ] = None,
    test_fraction: Annotated[float | None, typer.Option(
        "--test-fraction", metavar="SHARE", help="mit1003 only: share of images held out as the test split "
        "(default 0.1).")] = None,
    split_seed: Annotated[int, typer.Option("--seed", help="mit1003 only: seed of the train/test split.")] = 0,
    params: ParamsOpt = None,
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Import a published dataset, resized to data.height x data.width (LANCZOS), into an HDF5 data file."""
    from ser_cli.data.importers import ImportOptions
    from ser_cli.runtime.errors import UserError
    from stages import import_data as stage

    if storage not in (None, "raw", "encoded"):
        raise UserError(f"--storage: must be raw or encoded (got {storage!r})")
    given = {key: (option, value) for key, option, value in (
        ("data.storage", "--storage", storage), ("data.workers", "--workers", workers)) if value is not None}
    cfg = build_params(params, set_, options=given).data
    options = ImportOptions(class_order=class_order, limit_per_class=limit_per_class, test_fraction=test_fraction,
                            seed=split_seed)
    _echo_written(stage.run(cfg, fmt, src, out, options, overwrite), as_json)


@app.command("spurious", cls=PlainHelpCommand)
@error_boundary
def spurious(
    src: Annotated[Path, typer.Argument(metavar="IN.h5", help="Data file to copy (train split gets the feature).")],
    out: Annotated[Path, typer.Option("--out", help="Data file to write, e.g. data/synth_spurious.h5.")],
    overwrite: OverwriteOpt = False,
    params: ParamsOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Copy a data file with the paper's spurious feature: train images of class c brightened by 5(c+1)/255.

    The copy keeps the source's size and storage and reads no parameter; --params/--set are still checked, as by
    every command, so a broken params file is reported here too.
    """
    from stages import spurious as stage

    build_params(params, set_)
    _echo_written(stage.run(src, out, overwrite), as_json)


def _echo_written(path: Path, as_json: bool) -> None:
    """stdout of the commands that write a data file: its path, or with --json what `ser data info --json` prints."""
    if not as_json:
        typer.echo(str(path))
        return
    from ser_cli.data.store import DataFile

    typer.echo(json.dumps(DataFile(path).info(), indent=2))
