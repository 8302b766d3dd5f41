"""`python -m benchmarks [NAME ...] [--json]`: run the named benchmarks (default: all) and print one table.

Examples:
    python -m benchmarks                 # loader throughput and precompute speed, a Rich table on stdout
    python -m benchmarks loader          # one benchmark
    python -m benchmarks --json          # the rows as JSON, for scripts
    python -m benchmarks train-step ...  # the train-step sweep, its own options and JSON (`train-step --help`)
    python -m benchmarks backbones       # parameters and FLOPs per DER++ + SER step of every backbone
    python -m benchmarks gpu-check       # what a first run on a CUDA card must learn (< 8 min; skips without CUDA)
    python -m benchmarks demo --commits A,B  # the demo pipeline's time per stage at each commit (~10 min each)

`train-step`, `backbones`, `gpu-check` and `demo` are not part of "all" (a sweep of hours on a CPU; tables of another
shape), so they are asked for by name.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from rich.console import Console
from rich.table import Table

import benchmarks.loader_throughput  # noqa: F401 - registers "loader"
import benchmarks.precompute_speed  # noqa: F401 - registers "precompute"
from benchmarks.common import BENCHMARKS, Row

# asked for by name only, as the first word, with their own options (`python -m benchmarks NAME --help`)
BY_NAME = {"train-step": "the train-step sweep (s/step, peak memory, FLOPs per configuration)",
           "backbones": "parameters and FLOPs per DER++ + SER step of every backbone",
           "gpu-check": "the CUDA tests, train-step on the card and a CUDA-vs-CPU end-to-end run (skips without CUDA)",
           "demo": "the demo pipeline (dvc repro) per stage at one or more commits, each in a fresh clone"}


def parse_args() -> argparse.Namespace:
    # the whole docstring: its examples are the only place that says how train-step and backbones are run
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    by_name = "; ".join(f"{name}: {what}" for name, what in BY_NAME.items())
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"One of {', '.join(BENCHMARKS)} (default: all of them), or, alone and with their own "
                        f"options (NAME --help), {by_name}.")
    parser.add_argument("--json", action="store_true", help="Print the rows as JSON instead of a table.")
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        where = " (give it first, alone)" if unknown[0] in BY_NAME else ""
        parser.error(f"unknown benchmark {unknown[0]!r}{where}; choose from {', '.join([*BENCHMARKS, *BY_NAME])}")
    return args


def table(rows: list[Row], seconds: float) -> Table:
    """The rows as a Rich table, values with thousands separators."""
    out = Table(title=f"ser benchmarks ({seconds:.0f} s)")
    for column, justify in (
        ("benchmark", "left"),
        ("case", "left"),
        ("value", "right"),
        ("unit", "left"),
        ("note", "left"),
    ):
        out.add_column(column, justify=justify)
    for row in rows:
        value = "-" if row.value is None else f"{row.value:,.1f}" if row.value >= 10 else f"{row.value:.2f}"
        out.add_row(row.benchmark, row.case, value, row.unit, row.note)
    return out


def main() -> None:
    if sys.argv[1:2] == ["train-step"]:
        from benchmarks.train_step import main as train_step

        raise SystemExit(train_step(sys.argv[2:]))
    if sys.argv[1:2] == ["backbones"]:
        from benchmarks.backbones import main as backbones

        raise SystemExit(backbones(sys.argv[2:]))
    if sys.argv[1:2] == ["gpu-check"]:
        from benchmarks.gpu_check import main as gpu_check

        raise SystemExit(gpu_check(sys.argv[2:]))
    if sys.argv[1:2] == ["demo"]:
        from benchmarks.demo_pipeline import main as demo

        raise SystemExit(demo(sys.argv[2:]))
    args = parse_args()
    names = args.names or list(BENCHMARKS)
    start, rows = time.perf_counter(), []
    for name in names:
        rows.extend(BENCHMARKS[name]())
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
    else:
        Console().print(table(rows, time.perf_counter() - start))


if __name__ == "__main__":
    main()
