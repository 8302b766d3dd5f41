"""A grid's stated contrasts, computed from its results table: `python -m experiments.contrasts GRID.yaml TABLE.csv`.

The grid file states its contrasts before it runs (`contrasts: primary: [{ser, plain, metric}], secondary: [...]`);
this computes exactly those from the committed results table (`experiments.results_table`), nothing chosen
afterwards: per contrast the paired difference SER - plain over the seeds both runs have, its mean and two-sided
95 % Student-t interval (`ser_cli.report.pairs.paired_difference`, the one `ser compare` uses), how many seeds are
positive; secondary metrics for the same pairs. It also checks what a table must hold to be one experiment: one code
commit, one thread count and one target source per SER configuration, and says so in the output. Writes
`contrasts.json` and `contrasts.md` beside the table (`--dest` elsewhere) and prints the Markdown.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import yaml

from experiments.results_table import read_table
from ser_cli.report.pairs import PairedDiff, format_diff, paired_difference

CHANCE = 0.05  # the share of 95 % intervals that exclude 0 by chance when nothing differs


def by_seed(rows: list[dict[str, str]], name: str, metric: str) -> dict[int, float]:
    """{seed: value} of `metric` for the runs named `name` (empty cells skipped)."""
    return {int(r["seed"]): float(r[metric]) for r in rows if r["name"] == name and r.get(metric, "") != ""}


def contrast(rows: list[dict[str, str]], ser: str, plain: str, metric: str) -> dict[str, Any]:
    """One stated contrast: the paired difference and the per-seed signs."""
    d: PairedDiff = paired_difference(by_seed(rows, ser, metric), by_seed(rows, plain, metric))
    return {"ser": ser, "plain": plain, "metric": metric, **d.to_dict(),
            "positive_seeds": int(sum(x > 0 for x in d.diffs)), "excludes_zero": _excludes_zero(d),
            "text": format_diff(d)}


def _excludes_zero(d: PairedDiff) -> bool:
    return bool(d.n > 1 and math.isfinite(d.low) and (d.low > 0 or d.high < 0))


def consistency(rows: list[dict[str, str]]) -> dict[str, Any]:
    """The code commits, thread counts and per-name target sources of the table (each should be one)."""
    targets = {}
    for r in rows:
        if r.get("ser") == "True":
            targets.setdefault(r["name"], set()).add(r.get("targets", ""))
    return {"code_commits": sorted({r.get("code_commit", "") for r in rows}),
            "torch_threads": sorted({r.get("torch_threads", "") for r in rows}),
            "targets": {name: sorted(values) for name, values in sorted(targets.items())}}


def compute(grid: dict[str, Any], rows: list[dict[str, str]]) -> dict[str, Any]:
    """Every stated contrast of `grid` (primary, then secondary metrics of the same pairs) and the checks."""
    stated = grid.get("contrasts") or {}
    primary = [contrast(rows, c["ser"], c["plain"], c["metric"]) for c in stated.get("primary", [])]
    # each pair once: a pair stated for two primary metrics (E2: accuracy and PGD success) has one set of secondaries
    pairs = list(dict.fromkeys((c["ser"], c["plain"]) for c in stated.get("primary", [])))
    secondary = [contrast(rows, ser, plain, metric) for ser, plain in pairs for metric in stated.get("secondary", [])]
    intervals = [c for c in primary + secondary if c["n"] > 1]
    return {"primary": primary, "secondary": secondary, "consistency": consistency(rows),
            "intervals": len(intervals), "excluding_zero": sum(c["excludes_zero"] for c in intervals),
            "expected_by_chance": round(CHANCE * len(intervals), 2), "pooled": stated.get("pooled", "none")}


def markdown(result: dict[str, Any]) -> str:
    """The contrasts as Markdown tables with the multiple-comparisons line and the consistency checks."""
    lines = ["| contrast | metric | SER - plain, mean [95 % CI] (n) | seeds > 0 |", "|---|---|---:|---:|"]
    for kind in ("primary", "secondary"):
        for c in result[kind]:
            label = f"**{c['ser']} - {c['plain']}**" if kind == "primary" else f"{c['ser']} - {c['plain']}"
            lines.append(f"| {label} | {c['metric']} | {c['text']} | {c['positive_seeds']} of {c['n']} |")
    check = result["consistency"]
    lines += ["", f"{result['intervals']} intervals, {result['excluding_zero']} exclude 0; "
              f"{result['expected_by_chance']} would by chance if nothing differed (5 % each). Pooled analysis: "
              f"{result['pooled']}.",
              f"Code commits: {', '.join(c[:7] or '?' for c in check['code_commits'])}; torch threads: "
              f"{', '.join(check['torch_threads'])}; SER targets: "
              + "; ".join(f"{k}: {', '.join(v)}" for k, v in check["targets"].items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", type=Path, help="the grid file with its `contrasts`, e.g. experiments/grids/e1.yaml")
    parser.add_argument("table", type=Path, help="its results table, e.g. experiments/results/e1/runs.csv")
    parser.add_argument("--dest", type=Path, help="folder for contrasts.json / .md (default: the table's)")
    args = parser.parse_args(argv)
    result = compute(yaml.safe_load(args.grid.read_text()), read_table(args.table))
    dest = args.dest or args.table.parent
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "contrasts.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    text = markdown(result)
    (dest / "contrasts.md").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
