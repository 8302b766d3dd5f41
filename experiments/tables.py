"""Every result table the README and docs/ show, from the committed result tables: `python -m experiments.tables`.

Two jobs, both over README.md and docs/*.md:

1. **Regenerate the tables.** A block between `<!-- table:KIND GRID -->` and `<!-- /table -->` is replaced by the
   table of that kind computed from `experiments/results/GRID/runs.csv` (`experiments.results_table`):
   `contrasts` (the contrasts `experiments/grids/GRID.yaml` stated before it ran, `experiments.contrasts`) or
   `groups` (mean ± sample std over seeds of each run name: class-IL, task-IL, forgetting, n), `robustness` (the
   same for clean accuracy on the attacked subset and PGD / FGSM success rates). `--check` changes
   nothing and exits 1 naming every block that differs from its regeneration.
2. **Check the figures in the prose.** Every "mean ± std", every "mean [low, high]", every signed two-decimal
   difference quoted alone ("+3.55") and, in the README and docs/results.md, every two-decimal percentage
   ("22.33 %") must be one that some committed table yields, rounded as written: a run name's mean and std of a
   metric, or a paired difference between two run names of one grid, between two methods' spurious-feature drops,
   or between one run name's results in two grids. `--check` lists those that are not. Other figures (one decimal
   in a sentence, sizes, timings) are not checked.

A test runs `--check`, so a README number that no table holds fails CI.
"""

from __future__ import annotations

import argparse
import itertools
import math
import re
import statistics
import sys
from functools import cache
from pathlib import Path

import yaml

from experiments.contrasts import compute, markdown
from experiments.results_table import read_table
from ser_cli.report.pairs import paired_difference

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
GRIDS = ROOT / "experiments" / "grids"
BLOCK = re.compile(r"(<!-- table:(\w+) (\w+) -->\n)(.*?)(<!-- /table -->)", re.S)
MEAN_STD = re.compile(r"(-?\d+\.\d+) ± (\d+\.\d+)")
INTERVAL = re.compile(r"([+-]?\d+\.\d+) \[([+-]?\d+\.\d+), ([+-]?\d+\.\d+)\]")
SIGNED = re.compile(r"(?<![\w.\[])([+-]\d+\.\d\d)(?![\d\]])")  # a difference quoted alone: "+3.55"
PERCENT = re.compile(r"(?<![\w.\[+-])(\d+\.\d\d) ?%")  # an accuracy quoted alone: "22.33 %"
RESULT_DOCS = ("README.md", "results.md")  # where a bare percentage is a result (elsewhere: benchmarks, sizes)
GROUP_METRICS = {"class_il_final_avg_acc": "class-IL acc", "task_il_final_avg_acc": "task-IL acc",
                 "class_il_forgetting": "class-IL forgetting"}
# `robustness`: accuracy on the attacked subset, and the share of its clean-correct images each attack flips (%)
ROBUSTNESS_METRICS = {"clean_acc": "clean acc (subset)", "pgd_success_eps_1": "PGD success 1/255",
                      "pgd_success_eps_2": "PGD success 2/255", "pgd_success_eps_4": "PGD success 4/255",
                      "fgsm_success_eps_2": "FGSM success 2/255"}


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def groups_table(rows: list[dict[str, str]], metrics: dict[str, str] = GROUP_METRICS) -> str:
    """Mean ± sample std over seeds per run name of each of `metrics` (column -> heading), Markdown."""
    lines = ["| run | n | " + " | ".join(metrics.values()) + " |", "|---|---:|" + "---:|" * len(metrics)]
    for name in sorted({r["name"] for r in rows}):
        mine = [r for r in rows if r["name"] == name]
        cells = [_mean_std([float(r[m]) for r in mine if r.get(m, "") != ""]) for m in metrics]
        lines.append(f"| {name} | {len(mine)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f}"


def render(kind: str, grid: str) -> str:
    """The table `kind` of `grid`; ValueError naming what is missing."""
    table = RESULTS / grid / "runs.csv"
    if not table.is_file():
        raise ValueError(f"{table}: no results table")
    rows = read_table(table)
    if kind == "groups":
        return groups_table(rows)
    if kind == "robustness":
        return groups_table(rows, ROBUSTNESS_METRICS)
    if kind == "contrasts":
        return markdown(compute(yaml.safe_load((GRIDS / f"{grid}.yaml").read_text()), rows))
    raise ValueError(f"unknown table kind {kind!r} (contrasts, groups, robustness)")


def regenerate(text: str) -> tuple[str, list[str]]:
    """`text` with every table block regenerated, and the blocks that changed."""
    changed = []

    def replace(match: re.Match) -> str:
        new = render(match.group(2), match.group(3))
        if new != match.group(4):
            changed.append(f"{match.group(2)} {match.group(3)}")
        return match.group(1) + new + match.group(5)

    return BLOCK.sub(replace, text), changed


@cache
def derivable() -> tuple[set[tuple[str, str]], set[tuple[str, str, str]]]:
    """Every (mean, std) and (mean, low, high) the committed tables yield, formatted to 1 and 2 decimals."""
    mean_std, intervals = set(), set()
    grids: list[dict[str, dict[str, dict[int, float]]]] = []
    for table in sorted(RESULTS.glob("*/runs.csv")):
        rows = read_table(table)
        by_name: dict[str, dict[str, dict[int, float]]] = {}
        for r in rows:
            for key, value in r.items():
                number = _number(value)
                if number is not None and r.get("seed", "") != "":
                    by_name.setdefault(r["name"], {}).setdefault(key, {})[int(r["seed"])] = number
        _add_drops(by_name)
        for metrics in by_name.values():
            for values in metrics.values():
                v = list(values.values())
                std = statistics.stdev(v) if len(v) > 1 else 0.0
                mean_std |= {(f"{statistics.mean(v):.{d}f}", f"{std:.{d}f}") for d in (1, 2)}
        intervals |= _pair_intervals([(by_name[a], by_name[b]) for a, b in itertools.permutations(by_name, 2)])
        grids.append(by_name)
    # one configuration in two grids (rerun with other inputs): the change between them, by seed
    for one, two in itertools.permutations(grids, 2):
        intervals |= _pair_intervals([(two[name], one[name]) for name in one.keys() & two.keys()])
    return mean_std, intervals


def _pair_intervals(pairs: list[tuple[dict[str, dict[int, float]], dict[str, dict[int, float]]]]) -> set:
    """(mean, low, high) of a - b by seed, per metric both have, for every (a, b) of `pairs`."""
    out = set()
    for a, b in pairs:
        for key in a.keys() & b.keys():
            d = paired_difference(a[key], b[key])
            if d.n > 1 and math.isfinite(d.low):
                out |= {tuple(_signed(x, dec) for x in (d.mean, d.low, d.high)) for dec in (1, 2)}
    return out


def _add_drops(by_name: dict[str, dict[str, dict[int, float]]]) -> None:
    """For each run name X with a partner `X_spurious`, the series `X~drop` = X - X_spurious by seed: what
    spurious features cost (Bellitto et al., section 5.3); pairs of drops then compare two methods' costs."""
    for name in [n for n in by_name if f"{n}_spurious" in by_name]:
        clean, spurious = by_name[name], by_name[f"{name}_spurious"]
        by_name[f"{name}~drop"] = {k: {s: clean[k][s] - spurious[k][s] for s in clean[k].keys() & spurious[k].keys()}
                                   for k in clean.keys() & spurious.keys()}


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _signed(x: float, decimals: int) -> str:
    return f"{x:+.{decimals}f}"


def unheld_figures(text: str, results: bool = True) -> list[str]:
    """The "m ± s", "m [lo, hi]" and signed two-decimal figures of `text` (and, where `results`, the two-decimal
    percentages) that no committed table yields."""
    mean_std, intervals = derivable()
    missing = [f"{m} ± {s}" for m, s in MEAN_STD.findall(text) if (m, s) not in mean_std]
    for m, lo, hi in INTERVAL.findall(text):
        key = tuple(x if x[0] in "+-" else "+" + x for x in (m, lo, hi))
        if key not in intervals:
            missing.append(f"{m} [{lo}, {hi}]")
    singles = {m for m, _ in mean_std} | {x[0].lstrip("+") for x in intervals}
    alone = INTERVAL.sub("", MEAN_STD.sub("", text))
    missing += [x for x in SIGNED.findall(alone) if x.lstrip("+") not in singles]
    missing += [f"{x} %" for x in PERCENT.findall(alone) if results and x not in singles]
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 on a stale block or figure")
    args = parser.parse_args(argv)
    problems = []
    for doc in documents():
        text = doc.read_text()
        new, changed = regenerate(text)
        rel = doc.relative_to(ROOT)
        problems += [f"{rel}: table '{c}' differs from its results table" for c in changed] if args.check else []
        if not args.check and new != text:
            doc.write_text(new)
            print(f"{rel}: regenerated {', '.join(changed)}")
        problems += [f"{rel}: {figure} is in no committed result table"
                     for figure in unheld_figures(new, results=doc.name in RESULT_DOCS)]
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
