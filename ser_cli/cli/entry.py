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

# Idle OpenMP threads spin briefly, then sleep (libgomp, torch's OpenMP on Linux, spins 300,000 rounds by default).
# Measured on 2 cores, DER++ + SER at 32x48, 2 threads (benchmarks/RESULTS.md, "Demo speed"): on a quiet machine
# 0.177 s/step with libgomp's default, 0.186 with 5,000 rounds, 0.289 never spinning (OMP_WAIT_POLICY=PASSIVE, a
# thread wakes for every small parallel region); with another process busy on one core 0.61-2.14 s with the
# default (a spinning thread holds the core its partner needs), 0.47-0.58 with 5,000, 0.40 never spinning. How
# threads wait never changes which one computes what, so results stay bit-identical. Read when libgomp loads (with
# torch): set before any import of torch; a user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
GOMP_SPINCOUNT = "5000"


def wait_environment(environ: dict[str, str]) -> dict[str, str]:
    """The OpenMP waiting settings to add to `environ`: a short spin unless the user chose how threads wait."""
    if "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ:
        return {}
    return {"GOMP_SPINCOUNT": GOMP_SPINCOUNT}


def main() -> None:
    """Entry point: see the module docstring; `ser --no-memory-tuning ...` or `SER_ALLOCATOR=glibc` skip the restart."""
    os.environ.update(wait_environment(dict(os.environ)))
    restart_on_fast_allocator(sys.argv[1:])
    from ser_cli.cli.app import main as run_cli

    run_cli()
