"""`ser params [SECTION]`: the resolved configuration (`params.yaml` or `--params`, then `--set`) as commented YAML."""

from __future__ import annotations

import difflib
from typing import Annotated

import typer

from ser_cli.cli.errors import error_boundary
from ser_cli.cli.options import ParamsOpt, SetOpt, build_params
from ser_cli.runtime.errors import UserError


@error_boundary
def params(
    section: Annotated[str | None, typer.Argument(
        metavar="[SECTION]", help="A section (train, data.synth, ...) or one key (train.lr); default: all of them.",
        show_default=False)] = None,
    params_file: ParamsOpt = None,
    set_: SetOpt = None,
) -> None:
    """Print the settings every command would use, with what each key means, as YAML (a valid params file).

    Values are those of ./params.yaml (or --params FILE) with the --set overrides applied, defaults for keys the file
    leaves out. Change one for a command with --set SECTION.KEY=VALUE, or edit params.yaml.
    """
    from ser_cli.cli.settings_view import commented_yaml, known_paths

    cfg = build_params(params_file, set_)
    if section is not None and section not in known_paths():
        close = difflib.get_close_matches(section, known_paths(), n=1)
        hint = f"did you mean '{close[0]}'?" if close else "sections: data, data.synth, saliency, precompute, " \
            "train, evaluate"
        raise UserError(f"ser params: unknown section or key '{section}'; {hint}")
    typer.echo(commented_yaml(cfg, section), nl=False)
