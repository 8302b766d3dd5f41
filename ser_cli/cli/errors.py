"""The error boundary: every command runs inside it, so user mistakes become one line and an exit code.

`SerError` subclasses carry their exit code (2 for invalid input, 1 for runtime failures); anything else is a bug
and keeps its traceback. Set SER_DEBUG=1 to see the traceback of a `SerError` too.
"""

from __future__ import annotations

import errno
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
        except OSError as err:
            code = _os_error_code(err)
            if code is None or os.environ.get("SER_DEBUG") == "1":
                raise
            where = err.filename or "output"
            stderr_console.print(f"error: {where}: {err.strerror or err}", markup=False, highlight=False,
                                 soft_wrap=True)
            raise typer.Exit(code=code) from None
        except KeyboardInterrupt:
            stderr_console.print("interrupted; rerun the same command to resume", markup=False)
            raise typer.Exit(code=130) from None

    return wrapper


# The environment's refusals, not bugs: no permission, a read-only file system or a path that cannot name a file (a
# symbolic-link loop, a name too long, a file used as a folder) is the user's to fix (exit 2); a
# full disk or a file-size limit is a runtime failure (exit 1). Anything else keeps its traceback.
USER_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ELOOP, errno.ENAMETOOLONG, errno.ENOTDIR)
RUNTIME_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _os_error_code(err: OSError) -> int | None:
    if err.errno in USER_ERRNOS:
        return 2
    if err.errno in RUNTIME_ERRNOS:
        return 1
    return None
