"""`ser evaluate`: continual-learning metrics, adversarial robustness, saliency quality and figures of a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ser_cli.cli.errors import error_boundary
from ser_cli.cli.options import DeviceOpt, JsonOpt, OverwriteOpt, ParamsOpt, QuietOpt, SeedOpt, SetOpt, build_params


@error_boundary
def evaluate(
    run: Annotated[Path, typer.Option("--run", help="Run folder written by `ser train --out RUN`.")],
    data: Annotated[Path, typer.Option("--data", help="The data file the run was trained on (checked).")],
    out: Annotated[Path, typer.Option("--out", help="Evaluation folder to write, e.g. evals/derpp_ser.")],
    maps: Annotated[
        Path | None,
        typer.Option("--maps", help="Saliency targets (ser precompute) for the saliency scores; default: the data "
                     "file's own maps."),
    ] = None,
    device: DeviceOpt = "auto",
    params: ParamsOpt = None,
    set_: SetOpt = None,
    seed: SeedOpt = None,
    as_json: JsonOpt = False,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Evaluate a trained run on its data file's test split (parameters under evaluate).

    Writes OUT/metrics.json, OUT/run.json, OUT/plots/*.csv and the figures accuracy_matrix.png, avg_accuracy.png,
    robustness.png, saliency_overlay.png and gradcam.png (image, Grad-CAM, target map per row). Prints OUT (or, with
    --json, the metrics) on stdout.

    Shardable: torchrun --nproc_per_node=K -m -- ser_cli evaluate --run RUN ... splits the test batches and the
    attacks over K processes; the metrics are the same as one process's (the -- keeps torchrun off --run).
    """
    from ser_cli.runtime import distributed
    from ser_cli.runtime.device import resolve_device
    from stages import evaluate as stage

    cfg = build_params(params, set_, seed, "evaluate.seed").evaluate
    stage.check_run_dir(run)
    from ser_cli.runs.run_identity import START_WEIGHTS
    from ser_cli.runs.run_io import load_run  # imports torch: after the cheap checks

    dev = distributed.rank_device(resolve_device(device), distributed.detect())
    loaded = load_run(run, dev)
    # what else made the run: its host and the weights it started from (runs trained before 2026-12-02: None)
    source = {"run_dir": str(run), "train_host": loaded.provenance.get("host"),
              **{key: loaded.provenance.get(key) for key in START_WEIGHTS},
              **{f"train_{key}": loaded.provenance.get(key) for key in ("code", "machine", "targets", "executor")}}
    result = stage.run(cfg, loaded, data, out, maps, dev, source=source, overwrite=overwrite)
    if result is None:  # ranks > 0 of a torchrun launch: rank 0 reports
        return
    if as_json:
        typer.echo(json.dumps({"out": str(result.out), **result.metrics}, indent=2, sort_keys=True))
    else:
        typer.echo(str(result.out))
