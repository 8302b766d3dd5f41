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

stderr_console = Console(stderr=True)


_quiet = False


def set_quiet(quiet: bool) -> None:
    """Set by the root command on every invocation (`ser --quiet ...`)."""
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    """`--quiet` on this invocation, or SER_QUIET=1 in the environment (e.g. for a whole DVC pipeline)."""
    return _quiet or os.environ.get("SER_QUIET") == "1"


def progress_bar() -> Progress:
    """A progress bar on stderr with a description, counts, a postfix field and the time remaining."""
    return Progress(
        SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=stderr_console, disable=is_quiet(), transient=False,
    )


def log(message: str) -> None:
    """A human-readable status line on stderr (not shown with --quiet)."""
    if not is_quiet():
        stderr_console.print(message)
