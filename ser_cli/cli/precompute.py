"""`ser precompute`: saliency maps for every image of a data file, from a predictor or from the data itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ser_cli.cli.errors import error_boundary
from ser_cli.cli.options import DeviceOpt, JsonOpt, ParamsOpt, QuietOpt, SetOpt, build_params


@error_boundary
def precompute(
    data: Annotated[Path, typer.Option("--data", help="Data file whose train and test images get maps.")],
    out: Annotated[Path, typer.Option("--out", help="Maps file to write, e.g. data/maps.h5.")],
    model: Annotated[
        Path | None, typer.Option("--model", help="The oracle that makes SER's targets: a saliency checkpoint "
                                    "(model.pt of ser pretrain-saliency, NOT the one SER's branch starts from) or "
                                    "your own model exported as TorchScript (normalised RGB batch in, one non-negative "
                                    "map per image out).")
    ] = None,
    from_dataset: Annotated[
        bool, typer.Option("--from-dataset", metavar="",
                           help="Copy the data file's own maps instead of predicting (no model).")
    ] = False,
    method: Annotated[
        str | None, typer.Option("--method", metavar="NAME",
                                 help="model (default: predict with --model), or a classical baseline that needs no "
                                 "fixation data: spectral-residual (Hou & Zhang 2007) or center-bias (Gaussian prior).")
    ] = None,
    metrics: Annotated[
        Path | None, typer.Option("--metrics", help="Metrics JSON to write (default: OUT with .metrics.json).")
    ] = None,
    device: DeviceOpt = "auto",
    params: ParamsOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write a maps file aligned row by row with --data (parameters under precompute).

    Maps from a predictor (--model), the data file itself (--from-dataset) or a classical method (--method).

    Resumable (rerun the same command after an interruption) and shardable:
    torchrun --nproc_per_node=K -m ser_cli precompute ... splits the batches over K processes.
    """
    from ser_cli.runtime.errors import UserError

    classical = method not in (None, "model")
    if (model is not None) + from_dataset + classical != 1:
        raise UserError("give exactly one of --model FILE (predict maps), --from-dataset (copy the data's maps) and "
                        "--method spectral-residual|center-bias (classical maps, no model)")
    from stages import precompute as stage

    cfg = build_params(params, set_).precompute
    method = "from-dataset" if from_dataset else method
    result = stage.run(cfg, data, out, model=model, device=device, metrics_path=metrics, method=method)
    if result is None:  # ranks > 0 of a torchrun launch: rank 0 reports
        return
    if as_json:
        typer.echo(
            json.dumps(
                {"out": str(result.out), "metrics_path": str(result.metrics_path), **result.metrics},
                indent=2,
                sort_keys=True,
            )
        )
    else:
        typer.echo(str(result.out))
