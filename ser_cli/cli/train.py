"""`ser train`: online continual learning with a replay method, with or without SER."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ser_cli.cli.errors import error_boundary
from ser_cli.cli.options import DeviceOpt, OverwriteOpt, ParamsOpt, RestartOpt, SeedOpt, SetOpt, build_params


@error_boundary
def train(
    data: Annotated[Path, typer.Option("--data", help="Data file (ser data synth / ser data import).")],
    out: Annotated[Path, typer.Option("--out", help="Run folder; rerunning the same command resumes it.")],
    maps: Annotated[Path | None, typer.Option("--maps", help="Maps file from ser precompute (SER targets).")] = None,
    method: Annotated[
        str | None, typer.Option("--method", help="sgd, joint, er, er_ace, der, derpp (or *_ser).")
    ] = None,
    ser: Annotated[bool | None, typer.Option("--ser/--no-ser", help="Add SER to the method (train.ser).")] = None,
    params: ParamsOpt = None,
    set_: SetOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = "auto",
    restart: RestartOpt = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Train a classifier continually (class-incremental, online) with a replay method and optional SER."""
    from stages import train as stage

    overrides = list(set_ or [])
    if method is not None:
        overrides.append(f"train.method={method}")
    if ser is not None:
        overrides.append(f"train.ser={str(ser).lower()}")
    cfg = build_params(params, overrides, seed, "train.seed")
    metrics = stage.run(cfg, data, maps, out, device,
                        start="overwrite" if overwrite else "restart" if restart else "resume")
    typer.echo(json.dumps(metrics, indent=2, sort_keys=True))
