"""Where a configuration's final accuracy comes from: `python -m experiments.per_task EVALS_DIR [--kind class_il]`.

Reads `plots/accuracy_matrix.csv` of every evaluation folder `NAME_sSEED` in EVALS_DIR (a grid's or a snapshot's)
and prints, per configuration NAME (mean over seeds), the accuracy on each task right after learning it (what the
learner picks up: plasticity) and on each task at the end (what it keeps: stability), as a Markdown table. A final
average made of one well-learned last task and collapsed old ones reads the same as one spread over all tasks; this
tells them apart. `--json` prints the numbers.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from ser_cli.sweep_grid import parse_tag


def read_matrix(path: Path, kind: str) -> dict[tuple[int, int], float]:
    """{(after_task, task): accuracy} of one evaluation's accuracy matrix."""
    try:
        return {(int(r["after_task"]), int(r["task"])): float(r[kind]) for r in csv.DictReader(path.open())}
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: not an accuracy matrix of `ser evaluate` (after_task, task, {kind}: "
                         f"{type(err).__name__} {err})") from None


def per_task(evals_dir: Path, kind: str = "class_il") -> dict[str, dict]:
    """{NAME: {"n", "just_learned": [per task], "final": [per task]}}, means over the seeds."""
    groups: dict[str, list[dict[tuple[int, int], float]]] = defaultdict(list)
    for folder in sorted(evals_dir.iterdir()):
        csv_path = folder / "plots" / "accuracy_matrix.csv"
        tag = parse_tag(folder.name)
        if tag and csv_path.is_file():
            groups[tag[0]].append(read_matrix(csv_path, kind))
    out = {}
    for name, matrices in groups.items():
        last = max(a for a, _ in matrices[0])
        tasks = range(1, last + 1)
        if any((t, t) not in m or (last, t) not in m for m in matrices for t in tasks):
            raise ValueError(f"{evals_dir}: the accuracy matrices of {name} do not all cover tasks 1-{last}")
        out[name] = {"n": len(matrices),
                     "just_learned": [float(np.mean([m[(t, t)] for m in matrices])) for t in tasks],
                     "final": [float(np.mean([m[(last, t)] for m in matrices])) for t in tasks]}
    return out


def markdown(table: dict[str, dict]) -> str:
    n_tasks = max(len(s["final"]) for s in table.values())
    head = ["run", "n", "just learned: mean", *(f"final: task {t}" for t in range(1, n_tasks + 1)), "final: mean"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for name, s in table.items():
        cells = [f"{np.mean(s['just_learned']):.1f}", *(f"{v:.1f}" for v in s["final"]), f"{np.mean(s['final']):.1f}"]
        lines.append("| " + " | ".join([name, str(s["n"]), *cells]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("evals_dir", type=Path)
    parser.add_argument("--kind", choices=["class_il", "task_il"], default="class_il")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not args.evals_dir.is_dir():
        parser.exit(2, f"error: {args.evals_dir}: no such folder of evaluations\n")
    try:
        table = per_task(args.evals_dir, args.kind)
    except ValueError as err:
        parser.exit(2, f"error: {err}\n")
    if not table:
        parser.exit(2, f"error: {args.evals_dir}: no NAME_sSEED/plots/accuracy_matrix.csv inside\n")
    print(json.dumps(table, indent=2) if args.json else markdown(table), end="")


if __name__ == "__main__":
    main()
