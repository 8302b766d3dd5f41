"""The error boundary: every command runs inside it, so user mistakes become one line and an exit code.

`SerError` subclasses carry their exit code (2 for invalid input, 1 for runtime failures); anything else is a bug
and keeps its traceback. Set SER_DEBUG=1 to see the traceback of a `SerError` too.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import typer

from ser_cli.runtime.errors import SerError
from ser_cli.runtime.progress import stderr_console


def error_boundary(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command: SerError -> `error: message` on stderr and its exit code; Ctrl-C -> exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SerError as err:
            if os.environ.get("SER_DEBUG") == "1":
                raise
            stderr_console.print(f"error: {err}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(code=err.exit_code) from None
        except KeyboardInterrupt:
            stderr_console.print("interrupted; rerun the same command to resume", markup=False)
            raise typer.Exit(code=130) from None

    return wrapper
