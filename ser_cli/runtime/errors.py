"""The error types of `ser`, one per kind of failure, each carrying the process exit code.

Library code raises these deep down with a one-line, user-readable message; the single error boundary in
`ser_cli.cli.app` prints the message and exits with `exit_code`. Anything else is a bug and keeps its traceback.
"""


class SerError(Exception):
    """Base of every error the CLI turns into a one-line message."""

    exit_code = 1


class UserError(SerError):
    """Invalid input or usage: a bad file, field, value or option (exit 2)."""

    exit_code = 2


class RunFailure(SerError):
    """A run failed for a reason that is not the user's input, e.g. a NaN loss (exit 1)."""

    exit_code = 1
