"""Run `ser` with a fault injected, for the kill and interrupt tests: `python -m tests.faults FAULT VALUE ARGS...`.

The faults are patched in here, around the shipped functions; no shipped code reads a test switch.

    step-delay SECONDS   ser train: sleep after every training step (`ContinualTrainer._step`)
    batch-delay SECONDS  ser precompute: sleep after every committed batch (`MapsWorkFile.write`)
    kill-after-steps N   ser pretrain-saliency: SIGKILL itself after the N-th optimiser step of this process, once
                         the loop has handled the step (checkpointing it if one was due)
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import time
from pathlib import Path


def _after(cls: type, name: str, action) -> None:
    original = getattr(cls, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        action()
        return result

    setattr(cls, name, wrapper)


def _kill_after_steps(n: int) -> None:
    from ser_cli.training.saliency_trainer import SaliencyTrainer

    original, count = SaliencyTrainer.train_epoch, [0]

    def train_epoch(self):
        for result in original(self):
            yield result  # returns once the loop asks for the next step: it has handled this one
            count[0] += 1
            if count[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)

    SaliencyTrainer.train_epoch = train_epoch


def main() -> None:
    fault, value, *args = sys.argv[1:]
    if fault == "step-delay":
        from ser_cli.continual.loop import ContinualTrainer

        _after(ContinualTrainer, "_step", lambda: time.sleep(float(value)))
    elif fault == "batch-delay":
        from ser_cli.data.maps import MapsWorkFile

        _after(MapsWorkFile, "write", lambda: time.sleep(float(value)))
    elif fault == "kill-after-steps":
        _kill_after_steps(int(value))
    else:
        raise SystemExit(f"unknown fault {fault!r}")
    sys.argv = ["ser", *args]
    from ser_cli.cli.app import main as ser_main

    ser_main()


def command(fault: str, value: object, *args: str) -> list[str]:
    """The argv of a `ser` process with `fault` injected (run it with `env()`, from any folder)."""
    return [sys.executable, "-m", "tests.faults", fault, str(value), *args]


def env(**extra: str) -> dict[str, str]:
    """The environment that makes `tests.faults` importable from any working folder, one torch thread."""
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
            "OMP_NUM_THREADS": "1", **extra}


if __name__ == "__main__":
    main()
