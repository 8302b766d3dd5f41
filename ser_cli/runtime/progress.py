"""Rich progress bars on stderr (stdout stays for results), silenced by `--quiet`.

Stages call `progress_bar()` and add one task per phase; when stderr is not a terminal (DVC, CI) Rich prints a
single final line instead of redrawing.
"""

from __future__ import annotations

import os

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column

stderr_console = Console(stderr=True)


_quiet = False


def set_quiet(quiet: bool) -> None:
    """Set by the root command on every invocation (`ser --quiet ...`)."""
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    """`--quiet` on this invocation, or SER_QUIET=1 in the environment (e.g. for a whole DVC pipeline)."""
    return _quiet or os.environ.get("SER_QUIET") == "1"


BAR_WIDTH = 20
# spinner, a description of about 16 characters, the bar, "1500/1500", elapsed and remaining time, the spaces between
FIXED_WIDTH = 2 + 17 + BAR_WIDTH + 1 + 10 + 8 + 8


def progress_bar(console: Console | None = None) -> Progress:
    """A progress bar on stderr with a description, counts, a postfix field and the time remaining.

    The postfix (losses) gets only the width the rest leaves, cut with an ellipsis: on a narrow terminal (80 columns)
    the step count and the time remaining stay whole and the losses are what is dropped.
    """
    console = console or stderr_console
    postfix = Column(no_wrap=True, overflow="ellipsis", max_width=max(0, console.width - FIXED_WIDTH))
    return Progress(
        SpinnerColumn(), TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True)),
        BarColumn(bar_width=BAR_WIDTH), MofNCompleteColumn(table_column=Column(no_wrap=True)),
        TextColumn("{task.fields[info]}", table_column=postfix), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, disable=is_quiet(), transient=False,
    )


def log(message: str) -> None:
    """A human-readable status line on stderr (not shown with --quiet)."""
    if not is_quiet():
        stderr_console.print(message)
