"""`ser predict`: saliency maps of any JPEG or PNG images, from a pretrained predictor or a SER run's branch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ser_cli.cli.errors import error_boundary
from ser_cli.cli.options import DeviceOpt, JsonOpt, OverwriteOpt, QuietOpt


@error_boundary
def predict(
    images: Annotated[list[str], typer.Argument(
        metavar="IMAGE", help="Image files, folders (searched recursively) or glob patterns ('photos/**/*.jpg'); "
        "JPEG and PNG.")],
    model: Annotated[Path, typer.Option(
        "--model", help="model.pt of ser pretrain-saliency, or of a ser train run with SER (its saliency branch).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for NAME.png (grey map) and NAME_overlay.png.")],
    h5: Annotated[Path | None, typer.Option(
        "--h5", help="Also write every map at the model's input size into this HDF5 file.")] = None,
    size: Annotated[str | None, typer.Option(
        "--size", metavar="HxW", help="Model input size HxW, e.g. 288x384 (default: the size model.pt records, else "
        "that of the data file the model was trained on, when it is still there; another size than the recorded one "
        "gets a warning).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")] = 16,
    device: DeviceOpt = "auto",
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write a saliency map per image, at the image's own size, and a heat overlay.

    Each image is resized to the model's input size, predicted, and its map resized back.
    Images of the same name in different folders are named by their relative path (sub_dir__img.png).
    A bad image gets one line on stderr and is skipped; the exit code is then 1.
    """
    from stages import predict as stage

    result = stage.run(images, model, out, h5=h5, size=size, batch_size=batch_size, device=device,
                       overwrite=overwrite)
    if as_json:
        typer.echo(json.dumps(result.summary(), indent=2, sort_keys=True))
    else:
        typer.echo(str(result.out))
    if result.skipped:
        raise typer.Exit(code=1)
