"""How hard each part of the classifier is pushed in the first steps of a run: `python -m experiments.gradient_norms
OUT.json --steps 75 -- SER_TRAIN_ARGS...`, then `python -m experiments.gradient_norms --table A.json B.json ...`.

The question (issue #10): SER runs end their first task at a higher stream cross-entropy than plain runs. Is the
modulated classifier's gradient smaller where it must learn most (the early blocks), so that each SGD step moves it
less? The script runs the real `ser train` in this process with the given arguments and, before every step of the
classifier's optimiser, records per block of the classifier (stem, stages, head; the modulation's own parameters
if it has any) the L2 norm of the gradient the step applies, and the step's relative size lr * |g| / |w|. After
`--steps` optimiser steps it stops the run (its output folder is a temporary one, removed). `--table` prints the
mean over the recorded steps per block, one row per file, and the ratio of each to the first file's.

The recorder patches nothing in the library: it is a step hook of the `ContinualTrainer` the stage builds
(`ser_cli.continual.loop.StepHook`, handed to `ser train` as Click's context object) and PyTorch's global
optimiser step pre-hook.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from ser_cli.continual.loop import ContinualTrainer


class EnoughSteps(Exception):
    """Raised from the optimiser hook once the wanted steps are recorded: ends the run."""


def block_of(name: str) -> str:
    """`blocks.0.0.weight` -> `blocks.0`, `head.bias` -> `head`: the part of the network a parameter belongs to."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "blocks" else parts[0]


def block_label(block: str) -> str:
    """`blocks.0` -> `stem`, `blocks.K` -> `stage K`, anything else as it is."""
    if block.startswith("blocks."):
        index = int(block.split(".")[1])
        return "stem" if index == 0 else f"stage {index}"
    return block


class GradientRecorder:
    """Per classifier optimiser step, the gradient norm and relative step size of each block."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.rows: list[dict[str, dict[str, float]]] = []
        self.blocks: dict[int, str] = {}  # id(parameter) -> block

    def attach(self, trainer: ContinualTrainer, *_: Any) -> None:
        """The step hook: before each step, know the classifier's parameters (the same ones every step)."""
        if self.blocks:
            return
        learner = trainer.learner
        named = list(learner.classifier.named_parameters())
        if learner.modulation is not None:
            named += [(f"modulation.{n}", p) for n, p in learner.modulation.named_parameters()]
        self.blocks = {id(p): block_of(n) for n, p in named}

    def before_step(self, optimizer: torch.optim.Optimizer, *_: Any) -> None:
        params = [(p, group["lr"]) for group in optimizer.param_groups for p in group["params"]]
        if not params or id(params[0][0]) not in self.blocks:
            return  # another optimiser (the saliency branch's)
        sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])  # |g|^2, |w|^2, lr
        for p, lr in params:
            if p.grad is None:
                continue
            acc = sums[self.blocks[id(p)]]
            acc[0] += float(p.grad.detach().double().pow(2).sum())
            acc[1] += float(p.detach().double().pow(2).sum())
            acc[2] = lr
        self.rows.append({b: {"grad_norm": g ** 0.5, "relative_step": lr * g ** 0.5 / max(w ** 0.5, 1e-12)}
                          for b, (g, w, lr) in sums.items()})
        if len(self.rows) >= self.steps:
            raise EnoughSteps

    def summary(self) -> dict[str, dict[str, float]]:
        """Per block, the mean over the recorded steps of each quantity."""
        blocks = sorted({b for row in self.rows for b in row}, key=_block_order)
        return {b: {k: sum(r[b][k] for r in self.rows if b in r) / sum(b in r for r in self.rows)
                    for k in ("grad_norm", "relative_step")} for b in blocks}


def _block_order(block: str) -> tuple[int, int]:
    if block.startswith("blocks."):
        return 0, int(block.split(".")[1])
    return (1, 0) if block == "head" else (2, 0)


def record(train_args: list[str], steps: int) -> GradientRecorder:
    """Run `ser train TRAIN_ARGS` in this process until `steps` classifier steps are recorded."""
    from ser_cli.cli.app import app

    recorder = GradientRecorder(steps)
    hook = register_optimizer_step_pre_hook(recorder.before_step)
    with tempfile.TemporaryDirectory() as tmp:
        args = ["-q", "train", "--out", str(Path(tmp) / "run"), *train_args]
        try:
            code = app(args, prog_name="ser", standalone_mode=False, obj={"step_hooks": [recorder.attach]})
            if code:  # a user or run error: its one line is already on stderr
                raise SystemExit(code)
        except EnoughSteps:
            pass
        except SystemExit as done:
            if done.code:
                raise
        finally:
            hook.remove()
    if len(recorder.rows) < steps:
        raise SystemExit(f"the run ended after {len(recorder.rows)} classifier steps, fewer than --steps {steps}")
    return recorder


def table(files: list[Path]) -> str:
    """Mean gradient norm per block, one row per file, and each block's ratio to the first file's."""
    runs = [(f.stem, json.loads(f.read_text())) for f in files]
    blocks = list(runs[0][1]["blocks"])
    head = "| run | steps | " + " | ".join(block_label(b) for b in blocks) + " |"
    lines = ["Mean L2 norm of the classifier's gradient per block over the first steps (in brackets: ratio to the "
             f"first row, {runs[0][0]}); then the mean relative step lr |g| / |w|.", "", head,
             "|---|---:|" + "---:|" * len(blocks)]
    base = runs[0][1]["blocks"]
    for name, run in runs:
        cells = []
        for b in blocks:
            g = run["blocks"].get(b, {}).get("grad_norm")
            cells.append("" if g is None else f"{g:.3g} ({g / base[b]['grad_norm']:.2f}x)")
        lines.append(f"| {name} | {run['steps']} | " + " | ".join(cells) + " |")
    lines += ["", head.replace("| run | steps |", "| run (relative step) | steps |"),
              "|---|---:|" + "---:|" * len(blocks)]
    for name, run in runs:
        cells = [f"{run['blocks'][b]['relative_step']:.2e}" if b in run["blocks"] else "" for b in blocks]
        lines.append(f"| {name} | {run['steps']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ours, train_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, nargs="?", help="JSON to write (with `-- SER_TRAIN_ARGS`)")
    parser.add_argument("--steps", type=int, default=75, help="classifier optimiser steps to record (default 75)")
    parser.add_argument("--table", type=Path, nargs="+", help="print the table of these JSON files")
    args = parser.parse_args(ours)
    if args.table:
        print(table(args.table), end="")
        return
    if args.out is None or not train_args:
        parser.error("give OUT.json and the `ser train` arguments after `--`")
    if args.steps < 1:
        parser.error(f"--steps must be at least 1 (got {args.steps})")
    recorder = record(train_args, args.steps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"train_args": train_args, "steps": len(recorder.rows),
                                    "blocks": recorder.summary(), "per_step": recorder.rows}, indent=1) + "\n")
    print(table([args.out]), end="")


if __name__ == "__main__":
    main()
