"""`ser pretrain-saliency`: train the saliency predictor on a data file with maps (stage `pretrain_saliency`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer

from ser_cli.cli.errors import error_boundary
from ser_cli.cli.options import DeviceOpt, JsonOpt, ParamsOpt, QuietOpt, RestartOpt, SeedOpt, SetOpt, build_params


@error_boundary
def pretrain_saliency(
    data: Annotated[Path, typer.Option("--data", help="Data file with saliency maps, e.g. data/pretrain.h5.")],
    out: Annotated[Path, typer.Option("--out", help="Run directory for model.pt, metrics.json and plots.")] = Path(
        "models/saliency"),
    init_from: Annotated[
        Path | None,
        typer.Option("--init-from", help="Classification checkpoint (backbone state dict) to start the encoder from."),
    ] = None,
    params: ParamsOpt = None,
    set_: SetOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
    restart: RestartOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train the saliency predictor (parameters under saliency) and compare it with a centre-bias map.

    Writes OUT/model.pt, metrics.json, predictions.png and train_log.csv.
    An interrupted run resumes from OUT/checkpoint.pt when the same command is run again.

    Data-parallel: torchrun --nproc_per_node=K -m ser_cli pretrain-saliency ... trains on K processes,
    saliency.batch_size images each per step (saliency.sync_bn=true: BatchNorm over all K batches).
    """
    from stages import pretrain_saliency as stage

    # a value validated with the section (both encoder starts at once is refused), not copied in afterwards
    given = {"saliency.init_from": ("--init-from", str(init_from))} if init_from is not None else {}
    cfg = build_params(params, set_, seed, "saliency.seed", given).saliency
    result = stage.run(cfg, data, out, device_name=device, restart=restart)
    if result is None:  # ranks > 0 of a torchrun launch: rank 0 reports
        return
    if as_json:
        typer.echo(json.dumps({"model": str(result.model), "files": [str(f) for f in result.files],
                               "metrics": result.metrics}, indent=2, sort_keys=True))
        return
    from ser_cli.metrics.saliency import SCORE_NAMES

    typer.echo(str(result.model))
    m = result.metrics
    typer.echo(f"{'held-out':<10}" + "".join(f"{k:>10}" for k in SCORE_NAMES))
    for label, prefix in (("model", ""), ("centre", "center_bias_")):
        typer.echo(f"{label:<10}" + "".join(_fmt(m[prefix + k]) for k in SCORE_NAMES))


def _fmt(value: float | None) -> str:
    return f"{'-':>10}" if value is None or math.isnan(value) else f"{value:>10.3f}"
