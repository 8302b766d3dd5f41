"""The `ser` console script and `python -m ser_cli`: restart on tcmalloc when it is installed, then run the CLI.

Kept apart from `cli/app.py` so that the restart happens before torch and the commands are imported (the first
process then costs one interpreter start), and so that tests that call `app.main` in a forked child never restart
the test runner.
"""

from __future__ import annotations

import sys

from ser_cli.runtime.allocator import restart_with_tcmalloc


def main() -> None:
    """Entry point: see the module docstring; `ser --no-memory-tuning ...` or `SER_ALLOCATOR=glibc` skip the restart."""
    restart_with_tcmalloc(sys.argv[1:])
    from ser_cli.cli.app import main as run_cli

    run_cli()
