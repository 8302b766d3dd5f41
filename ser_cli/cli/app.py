"""The `ser` application: the root command, its global options and the registration of every command."""

from __future__ import annotations

from typing import Annotated

import typer

from ser_cli import __version__
from ser_cli.cli import compare as compare_cli
from ser_cli.cli import data
from ser_cli.cli import evaluate as evaluate_cli
from ser_cli.cli import params as params_cli
from ser_cli.cli import precompute as precompute_cli
from ser_cli.cli import predict as predict_cli
from ser_cli.cli import pretrain as pretrain_cli
from ser_cli.cli import sweep as sweep_cli
from ser_cli.cli import train as train_cli
from ser_cli.cli.help_format import PlainHelpCommand, PlainHelpGroup
from ser_cli.runtime.allocator import allocator_choice, tune_memory
from ser_cli.runtime.progress import set_quiet, stderr_console

app = typer.Typer(
    name="ser",
    cls=PlainHelpGroup,
    help="Saliency-driven Experience Replay: pretrain a saliency predictor, precompute maps, train continually, "
    "evaluate accuracy, forgetting and robustness.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},  # subcommands inherit it from the root's context
)
app.add_typer(data.app, name="data")
# Each further command module registers itself here with one line, e.g.
# app.command("pretrain-saliency", cls=PlainHelpCommand)(pretrain.pretrain_saliency)
app.command("pretrain-saliency", cls=PlainHelpCommand)(pretrain_cli.pretrain_saliency)
app.command("precompute", cls=PlainHelpCommand)(precompute_cli.precompute)
app.command("train", cls=train_cli.TrainCommand)(train_cli.train)
app.command("evaluate", cls=PlainHelpCommand)(evaluate_cli.evaluate)
app.command("compare", cls=PlainHelpCommand)(compare_cli.compare)
app.command("predict", cls=PlainHelpCommand)(predict_cli.predict)
app.command("sweep", cls=PlainHelpCommand)(sweep_cli.sweep)
app.command("params", cls=PlainHelpCommand)(params_cli.params)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"ser {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", metavar="", callback=_show_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", metavar="",
                                        help="No progress bars or status lines on stderr.")] = False,
    no_memory_tuning: Annotated[bool, typer.Option(
        "--no-memory-tuning", metavar="",
        help="Leave the allocator alone: no restart on tcmalloc or mimalloc, freed memory goes back to the OS "
             "(slower at large sizes; same results).")] = False,
) -> None:
    """Saliency-driven Experience Replay (NeurIPS 2024) for continual learning."""
    set_quiet(quiet)
    if not no_memory_tuning:
        _check_allocator_choice()
        tune_memory()


def _check_allocator_choice() -> None:
    """A misspelt `SER_ALLOCATOR` is a usage mistake (the restart, which ran before, ignored it)."""
    import os

    from typer._click.exceptions import UsageError

    try:
        allocator_choice(os.environ)
    except ValueError as err:
        raise UsageError(str(err)) from None


def main() -> None:
    """Console-script entry point (`ser`, `python -m ser_cli`).

    Usage mistakes (unknown option, missing option, bad value) become one line and exit 2, like every other user
    mistake, instead of Click's usage banner and box.
    """
    from typer._click.exceptions import NoArgsIsHelpError, UsageError

    try:
        code = app(prog_name="ser", standalone_mode=False)
    except NoArgsIsHelpError as err:
        typer.echo(err.ctx.get_help() if err.ctx else str(err))
        code = 0
    except UsageError as err:
        where = err.ctx.command_path if err.ctx else "ser"
        stderr_console.print(f"error: {where}: {_usage_message(err)} (see {where} --help)", markup=False,
                             highlight=False, soft_wrap=True)
        code = 2
    raise SystemExit(code if isinstance(code, int) else 0)


def _usage_message(err: Exception) -> str:
    """Click's message, or ours where it misleads: an unknown option that is a params key gets the `--set` to write,
    a typo only a close match (Click compares with the '--' that every option shares: '--bogus' -> '--out'), and a
    `--set KEY VALUE` (no '=') says so instead of 'unexpected extra argument'."""
    import sys

    from typer._click.exceptions import NoSuchOption

    from ser_cli.cli import settings_view as view

    argv = sys.argv[1:]
    if not isinstance(err, NoSuchOption):
        return view.set_without_equals(argv) or err.format_message()  # type: ignore[attr-defined]
    ctx, option = err.ctx, err.option_name
    key = view.setting_for_option(view.command_key(ctx), option)
    if key is not None:
        return f"No such option: {option}; it is a setting: --set {key}={view.option_value(argv, option)}"
    known = [name for p in (ctx.command.params if ctx else []) for name in (*p.opts, *p.secondary_opts)]
    close = view.close_option(option, known)
    return f"No such option: {option}" + (f". Did you mean {close}?" if close else "")
