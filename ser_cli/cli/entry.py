"""The `ser` console script and `python -m ser_cli`: restart on tcmalloc or mimalloc (runtime/allocator.py), then run
the CLI.

Kept apart from `cli/app.py` so that the restart happens before torch and the commands are imported (the first
process then costs one interpreter start), and so that tests that call `app.main` in a forked child never restart
the test runner.
"""

from __future__ import annotations

import os
import sys

from ser_cli.runtime.allocator import restart_on_fast_allocator

# Idle OpenMP threads sleep rather than spin (libgomp, torch's OpenMP, spins by default). With another process on a
# core, spinning threads made a 2-thread step 8-16x slower than one thread (benchmarks/RESULTS.md, "Demo speed");
# the policy only changes how threads wait, not which one computes what, so results stay bit-identical. Read when
# libgomp loads (with torch): set before any import of torch, and a user's own setting wins.
OMP_WAIT_POLICY = "PASSIVE"


def main() -> None:
    """Entry point: see the module docstring; `ser --no-memory-tuning ...` or `SER_ALLOCATOR=glibc` skip the restart."""
    os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
    restart_on_fast_allocator(sys.argv[1:])
    from ser_cli.cli.app import main as run_cli

    run_cli()
