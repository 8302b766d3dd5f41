"""Run `ser` with faults injected, for the kill and interrupt tests: `python -m tests.faults FAULT VALUE... ARGS...`.

The faults are patched in here, around the shipped functions; no shipped code reads a test switch. Several faults
may precede the `ser` arguments; each takes the number of values shown.

    step-delay SECONDS         ser train: sleep after every training step (`ContinualTrainer._step`)
    batch-delay SECONDS        ser precompute: sleep after every committed batch (`MapsWorkFile.write`)
    kill-after-calls TARGET N  any command: SIGKILL itself after the N-th return of TARGET in this process, a dotted
                               name (`stages.import_data._write_block`,
                               `ser_cli.data.maps_work.MapsWorkFile.write`);
                               for a generator function, after its N-th item, once the caller asks for the next one
    set-attr TARGET VALUE      any command: set the module or class attribute TARGET to VALUE (a Python literal),
                               e.g. `stages.import_data.BLOCK_ROWS 2` for more, smaller import units
    count-calls TARGET FILE    any command: append a line to FILE after each return (item) of TARGET
    float64                    any command: compute in float64 (default dtype, and `Tensor.float()` gives float64), for
                               comparisons that fp32 rounding would blur (the DDP equivalence test)
    on-rank R                  under torchrun: the faults after it apply only in the process of rank R (`RANK`)

`run_forked` runs the same thing in a forked child of the calling process: no interpreter start and no torch import,
which is most of the cost of a tiny run.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import multiprocessing
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def resolve(target: str) -> tuple[Any, str]:
    """`pkg.module.Class.attr` -> (the object holding `attr`, "attr"), importing the longest module prefix."""
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:-1]:
            owner = getattr(owner, name)
        getattr(owner, parts[-1])  # AttributeError now, not a silent no-op patch
        return owner, parts[-1]
    raise SystemExit(f"{target}: no importable module in this name")


def after_each(target: str, action: Callable[[], None]) -> None:
    """Patch `target` to call `action()` after each return; for a generator function, after each item, once the
    caller asks for the next one (it has handled this one by then)."""
    owner, name = resolve(target)
    original = getattr(owner, name)
    if inspect.isgeneratorfunction(original):

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            for item in original(*args, **kwargs):
                yield item
                action()

    else:

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            result = original(*args, **kwargs)
            action()
            return result

    setattr(owner, name, wrapper)


def kill_after_calls(target: str, n: int) -> None:
    """SIGKILL this process after the `n`-th return (generator: item) of `target`."""
    count = [0]

    def counted() -> None:
        count[0] += 1
        if count[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)

    after_each(target, counted)


def count_calls(target: str, path: str) -> None:
    """Append a line to `path` at each return (generator: item) of `target`: how much work this run did."""

    def append() -> None:
        with open(path, "a") as f:
            f.write(f"{target}\n")

    after_each(target, append)


def _set_attr(target: str, value: str) -> None:
    owner, name = resolve(target)
    setattr(owner, name, ast.literal_eval(value))


def _float64() -> None:
    import torch

    torch.set_default_dtype(torch.float64)
    torch.Tensor.float = lambda self, *args, **kwargs: self.to(torch.float64)


STEP = "ser_cli.continual.loop.ContinualTrainer._step"
COMMITTED_BATCH = "ser_cli.data.maps_work.MapsWorkFile.write"

FAULTS: dict[str, Callable[..., None]] = {  # name -> patcher taking the fault's values (strings)
    "step-delay": lambda seconds: after_each(STEP, lambda: time.sleep(float(seconds))),
    "batch-delay": lambda seconds: after_each(COMMITTED_BATCH, lambda: time.sleep(float(seconds))),
    "kill-after-calls": lambda target, n: kill_after_calls(target, int(n)),
    "count-calls": count_calls,
    "set-attr": _set_attr,
    "float64": _float64,
}


def inject(argv: list[str]) -> list[str]:
    """Apply the leading faults of `argv`; returns the `ser` arguments that follow them."""
    argv, applies = list(argv), True
    while argv and argv[0] in (*FAULTS, "on-rank"):
        if argv[0] == "on-rank":
            applies, argv = os.environ.get("RANK", "0") == argv[1], argv[2:]
            continue
        fn = FAULTS[argv.pop(0)]
        arity = len(inspect.signature(fn).parameters)
        values, argv = argv[:arity], argv[arity:]
        if applies:
            fn(*values)
    return argv  # a misspelt fault is left to `ser`, which refuses it as an unknown command


def main(argv: list[str] | None = None) -> None:
    """Inject the faults, then run `ser` with the remaining arguments (exits like `ser`)."""
    args = inject(sys.argv[1:] if argv is None else argv)
    sys.argv = ["ser", *args]
    from ser_cli.cli.app import main as ser_main

    ser_main()


def command(*faults_and_args: object) -> list[str]:
    """The argv of a `ser` process with faults injected (run it with `env()`, from any folder)."""
    return [sys.executable, "-m", "tests.faults", *map(str, faults_and_args)]


def env(**extra: str) -> dict[str, str]:
    """The environment that makes `tests.faults` importable from any working folder, one torch thread."""
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
            "OMP_NUM_THREADS": "1", **extra}


def run_forked(faults_and_args: list[object], cwd: Path, log: Path, **environ: str) -> int:
    """Run `python -m tests.faults FAULTS_AND_ARGS...` in a forked child; returns its exit status as
    `subprocess` reports it (`-9`: killed by SIGKILL). stdout and stderr go to `log`.

    The child starts from this process's state, so it is made to look fresh: the global Python, numpy and torch
    generators seeded from fresh entropy as in a new interpreter, one torch thread, `environ` added to its
    environment. Patches stay in the child. Call it from a process running no other threads (fork copies only
    the calling one).
    """
    others = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
    if others:
        raise RuntimeError(f"run_forked: threads {others} are running; a fork could copy a lock one of them holds")
    child = multiprocessing.get_context("fork").Process(
        target=_forked_main, args=([str(a) for a in faults_and_args], Path(cwd), Path(log), environ))
    child.start()
    child.join()
    return child.exitcode


def _forked_main(argv: list[str], cwd: Path, log: Path, environ: dict[str, str]) -> None:
    import numpy as np
    import torch

    os.environ.update({"OMP_NUM_THREADS": "1", **environ})
    os.chdir(cwd)
    out = open(log, "w", buffering=1)  # left open: the child exits with it
    os.dup2(out.fileno(), 1)
    os.dup2(out.fileno(), 2)
    sys.stdout = sys.stderr = out
    random.seed()  # fresh entropy, as a new interpreter has: a command relying on unseeded state shows up
    np.random.seed()
    torch.seed()
    torch.set_num_threads(1)
    main(argv)


if __name__ == "__main__":
    main()
