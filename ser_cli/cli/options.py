"""Options shared by every command, defined once as `Annotated` aliases, and the params they build."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ser_cli.config import Params
from ser_cli.config_loader import OptionValues, load_params

ParamsOpt = Annotated[
    Path | None,
    typer.Option("--params", help="Parameters file (default: ./params.yaml when present, else built-in defaults)."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="SECTION.KEY=VALUE",
                 help="Override one parameter (YAML value; repeatable); every key and its value: ser params."),
]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Seed of this stage (overrides its section's seed).")]
DeviceOpt = Annotated[str, typer.Option(
    "--device", envvar="SER_DEVICE", metavar="DEVICE",
    help="auto, cpu, cuda, cuda:N or cuda:auto (auto: CUDA when present; cuda:auto: a GPU no other ser process "
         "holds, for several jobs on one machine). Default from SER_DEVICE when set.")]
OverwriteOpt = Annotated[
    bool,
    typer.Option("--overwrite", metavar="",
                 help="Replace a finished output of this command made from other inputs or settings "
                 "(files ser did not write are never touched)."),
]
RestartOpt = Annotated[
    bool,
    typer.Option("--restart", metavar="",
                 help="Discard the checkpoint of an interrupted run in --out and start from zero."),
]
def _quiet(value: bool) -> bool:
    if value:
        from ser_cli.runtime.progress import set_quiet

        set_quiet(True)
    return value


QuietOpt = Annotated[
    bool,
    typer.Option("--quiet", "-q", metavar="", callback=_quiet, help="No progress bars or status lines on stderr."),
]
JsonOpt = Annotated[bool, typer.Option("--json", metavar="", help="Print machine-readable JSON on stdout.")]


def build_params(params: Path | None, overrides: list[str] | None, seed: int | None = None,
                 seed_key: str | None = None, options: OptionValues | None = None) -> Params:
    """Load and validate params; `options` (key -> (option, value)) and `--seed` (a value of `seed_key`) are set as
    values after the `--set` overrides, never parsed as YAML text."""
    given = dict(options or {})
    if seed is not None and seed_key is not None:
        given[seed_key] = ("--seed", seed)
    return load_params(params, overrides, given)
