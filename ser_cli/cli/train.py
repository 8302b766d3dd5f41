"""`ser train`: online continual learning with a replay method, with or without SER."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ser_cli.cli.errors import error_boundary
from ser_cli.cli.help_format import PlainHelpCommand
from ser_cli.cli.options import (
    DeviceOpt,
    JsonOpt,
    OverwriteOpt,
    ParamsOpt,
    QuietOpt,
    RestartOpt,
    SeedOpt,
    SetOpt,
    build_params,
)

METHOD_HELP = "{methods} (the registered methods); NAME_ser is NAME with SER (train.method)."


class TrainCommand(PlainHelpCommand):
    """`ser train`'s command: its --method help names the registered methods, read from the registry only when this
    command's options are listed (the registry imports torch, which `ser --help` and `ser data ...` never need)."""

    def get_params(self, ctx):  # noqa: ANN001, ANN201
        from ser_cli.continual.methods import method_names

        params = super().get_params(ctx)
        for param in params:
            if param.name == "method":
                param.help = METHOD_HELP.format(methods=", ".join(method_names()))
        return params


@error_boundary
def train(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option("--data", help="Data file (ser data synth / ser data import).")],
    out: Annotated[Path, typer.Option("--out", help="Run folder; rerunning the same command resumes it.")],
    maps: Annotated[Path | None, typer.Option("--maps", help="Maps file from ser precompute (SER targets).")] = None,
    method: Annotated[str | None, typer.Option("--method", metavar="NAME", help=METHOD_HELP)] = None,
    ser: Annotated[bool | None, typer.Option("--ser/--no-ser", metavar="",
                                             help="Add SER to the method (train.ser).")] = None,
    saliency_model: Annotated[
        Path | None,
        typer.Option("--saliency-model", help="model.pt of ser pretrain-saliency (train.saliency_checkpoint): the SER "
                     "branch, and the plain classifier's start under the default train.classifier_init."),
    ] = None,
    as_json: JsonOpt = False,
    params: ParamsOpt = None,
    set_: SetOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = "auto",
    restart: RestartOpt = False,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a classifier continually (class-incremental, online) with a replay method and optional SER."""
    from stages import train as stage

    # values, not YAML text: a path such as '#x/model.pt', 'null' or 'a: b/model.pt' must stay that path
    given = {key: (option, value) for key, option, value in (
        ("train.method", "--method", method), ("train.ser", "--ser", ser),
        ("train.saliency_checkpoint", "--saliency-model", None if saliency_model is None else str(saliency_model)),
    ) if value is not None}
    cfg = build_params(params, set_, seed, "train.seed", given)
    metrics = stage.run(cfg, data, maps, out, device,
                        start="overwrite" if overwrite else "restart" if restart else "resume",
                        step_hooks=step_hooks_of(ctx))
    if as_json:
        typer.echo(json.dumps({"out": str(out), **metrics}, indent=2, sort_keys=True))
        return
    typer.echo(str(out))
    typer.echo(f"class-IL {metrics['class_il_final_avg_acc']:.2f}  task-IL {metrics['task_il_final_avg_acc']:.2f}  "
               f"class-IL forgetting {metrics.get('class_il_forgetting', float('nan')):.2f}  "
               f"({metrics['steps']} steps, {metrics['train_seconds']:.0f} s)")


def step_hooks_of(ctx: typer.Context) -> list:
    """Step hooks a caller running `ser train` in-process handed over as Click's context object
    (`app(args, obj={"step_hooks": [hook]})`, `ser_cli.continual.loop.StepHook`); none from the command line."""
    obj = ctx.find_root().obj
    return list(obj.get("step_hooks", ())) if isinstance(obj, dict) else []
