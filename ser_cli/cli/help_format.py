"""How `--help` looks: flags without a value placeholder, and commands in the order a pipeline runs them.

Typer shows every boolean flag's type (`--json <bool>`, `--help <bool>`) although a flag takes no value; our flags
pass `metavar=""`, and these classes do the same for the `--help` option Typer adds to every command.
"""

from __future__ import annotations

from typer.core import TyperCommand, TyperGroup

PIPELINE_ORDER = ("data", "pretrain-saliency", "precompute", "train", "evaluate", "compare", "sweep", "predict")


def _without_placeholder(option):  # noqa: ANN001, ANN202 - click's Option | None
    if option is not None:
        option.metavar = ""
    return option


class PlainHelpCommand(TyperCommand):
    """A command whose `--help` shows no `<bool>`."""

    def get_help_option(self, ctx):  # noqa: ANN001, ANN201
        return _without_placeholder(super().get_help_option(ctx))


class PlainHelpGroup(TyperGroup):
    """A command group whose `--help` shows no `<bool>`, listing its commands in pipeline order (`data` first)."""

    def get_help_option(self, ctx):  # noqa: ANN001, ANN201
        return _without_placeholder(super().get_help_option(ctx))

    def list_commands(self, ctx) -> list[str]:  # noqa: ANN001
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: PIPELINE_ORDER.index(n) if n in PIPELINE_ORDER else len(PIPELINE_ORDER))
