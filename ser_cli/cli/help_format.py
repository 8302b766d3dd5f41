"""How `--help` looks: flags without a value placeholder, commands in the order a pipeline runs them, and a
"Settings" panel under the options of every command that reads params sections.

Typer shows every boolean flag's type (`--json <bool>`, `--help <bool>`) although a flag takes no value; our flags
pass `metavar=""`, and these classes do the same for the `--help` option Typer adds to every command.
"""

from __future__ import annotations

import functools

from typer.core import TyperArgument, TyperCommand, TyperGroup

PIPELINE_ORDER = ("data", "pretrain-saliency", "precompute", "train", "evaluate", "compare", "sweep", "predict",
                  "params")


def _without_placeholder(option):  # noqa: ANN001, ANN202 - click's Option | None
    if option is not None:
        option.metavar = ""
    return option


class PlainHelpCommand(TyperCommand):
    """A command whose `--help` shows no `<bool>`."""

    def get_help_option(self, ctx):  # noqa: ANN001, ANN201
        return _without_placeholder(super().get_help_option(ctx))

    def get_params(self, ctx):  # noqa: ANN001, ANN201
        params = super().get_params(ctx)
        for param in params:
            if isinstance(param, TyperArgument):
                param.display_type_rich = functools.partial(_argument_type, param)
        return params

    def format_help(self, ctx, formatter) -> None:  # noqa: ANN001
        super().format_help(ctx, formatter)
        _settings_panel(ctx)


def _argument_type(param: TyperArgument, ctx) -> str | None:  # noqa: ANN001
    """An argument's type column: `<path>` for files and folders, else nothing (its metavar, FORMAT or IMAGE..., says
    what it takes); Typer would show the Python type, `<str>` or `<list[Path]>`."""
    return "<path>" if "path" in TyperArgument.display_type_rich(param, ctx).lower() else None


def _settings_panel(ctx) -> None:  # noqa: ANN001 - click's Context
    """The command's most used params keys with their defaults, a `--set` example and where the rest are: the
    hyperparameters a `--help` reader looks for are settings, not options."""
    from ser_cli.cli.settings_view import COMMAND_SECTIONS, EXAMPLE, command_key, help_rows

    command = command_key(ctx)
    for section in COMMAND_SECTIONS.get(command, ()):
        title = f"Settings: params.yaml section {section} (built-in defaults shown)"
        rows = help_rows(section)
        footer = (f"Change one with --set, e.g. ser {command} ... --set {EXAMPLE[section]}; every key and its value "
                  f"from params.yaml: ser params {section}")
        _print_panel(title, rows, footer)


def _print_panel(title: str, rows: list[tuple[str, str]], footer: str) -> None:
    """A panel like Typer's Options panel, printed after it on the same console."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text
    from typer import rich_utils

    table = Table.grid(padding=(0, 2))
    for key, doc in rows:
        table.add_row(Text(key, style="bold cyan"), Text(doc))
    console = rich_utils._get_rich_console()
    console.print(Panel(Group(table, Text(""), Text(footer)), title=title,
                        title_align=rich_utils.ALIGN_OPTIONS_PANEL, border_style=rich_utils.STYLE_OPTIONS_PANEL_BORDER))


class PlainHelpGroup(TyperGroup):
    """A command group whose `--help` shows no `<bool>`, listing its commands in pipeline order (`data` first)."""

    def get_help_option(self, ctx):  # noqa: ANN001, ANN201
        return _without_placeholder(super().get_help_option(ctx))

    def get_params(self, ctx):  # noqa: ANN001, ANN201
        params = super().get_params(ctx)
        for param in params:  # the shell-completion flags Typer adds to the root, shown as `<bool>` otherwise
            if param.name in ("install_completion", "show_completion"):
                param.metavar = ""
        return params

    def list_commands(self, ctx) -> list[str]:  # noqa: ANN001
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: PIPELINE_ORDER.index(n) if n in PIPELINE_ORDER else len(PIPELINE_ORDER))
