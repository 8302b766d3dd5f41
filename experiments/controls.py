"""The protocol grid's controls as paired differences over seeds: what each control changes in SER's result.

`ser compare --pairs` pairs every SER group with its plain partner; the controls of `experiments/protocol.yaml` also
need SER against SER (oracle maps, a frozen or untrained saliency branch, eval-mode stream taps, each against SER
with the learned maps) and the longer-task pairs. This reads the per-seed metrics from one or more `summary.json`
files written by `ser compare` (a later file's group replaces an earlier one's of the same run name, so a snapshot
of an earlier session and a new report combine; where both hold a seed their values must agree: the runs are
deterministic) and prints two Markdown tables: each run name's mean ± sample std over its seeds, and each contrast's
mean [95 % Student-t interval] (n seeds); bold: the interval excludes 0.

    python -m experiments.controls experiments/results/protocol/summary.json \
        experiments/out/protocol/report/summary.json --out experiments/results/protocol/controls.md
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from ser_cli.report.pairs import PairedDiff, paired_difference
from ser_cli.runtime.atomic import write_text_atomic
from ser_cli.sweep_grid import parse_tag

METRICS = {"class_il_final_avg_acc": "class-IL acc", "task_il_final_avg_acc": "task-IL acc",
           "class_il_forgetting": "class-IL forgetting"}
# (question, a, b): a - b by seed; run names of experiments/protocol.yaml (SER classifiers random unless `_sal`)
CONTRASTS = [
    (f"{label}: {question}", f"{prefix}{a}", f"{prefix}{b}")
    for prefix, label in (("derpp", "DER++"), ("er_ace", "ER-ACE"))
    for question, a, b in (
        ("SER (random) - plain (saliency encoder): the protocol default", "_ser_rand", "_sal"),
        ("SER - plain, both classifiers random", "_ser_rand", "_rand"),
        ("SER - plain, both from the saliency encoder", "_ser_sal", "_sal"),
        ("plain from the saliency encoder - from random", "_sal", "_rand"),
        ("SER with oracle maps - SER", "_ser_oracle", "_ser_rand"),
        ("SER, branch frozen - SER", "_ser_frozen", "_ser_rand"),
        ("SER, untrained saliency network - SER", "_ser_untrained", "_ser_rand"),
        ("SER, eval-mode stream taps - SER", "_ser_evaltaps", "_ser_rand"),
        ("SER with oracle maps - plain (random)", "_ser_oracle", "_rand"),
        ("SER, branch frozen - plain (random)", "_ser_frozen", "_rand"),
        ("SER, untrained saliency network - plain (random)", "_ser_untrained", "_rand"),
        ("SER, eval-mode stream taps - plain (random)", "_ser_evaltaps", "_rand"),
    )
] + [
    (f"DER++: SER - plain, {label}", f"derpp_ser_{tag}", f"derpp_{tag}")
    for tag, label in (("tpc300", "300 images per class (2x the steps)"),
                       ("tpc600", "600 images per class (4x the steps)"), ("ep2", "2 epochs"))
]


def per_seed(summaries: list[Path]) -> dict[str, dict[str, dict[int, float]]]:
    """{run name: {metric: {seed: value}}} from `ser compare` summaries, a later file's values winning.

    Each value is filed under its own evaluation folder's `NAME_sSEED` (not its group's: a group that pooled runs of
    two names stays two runs); a seed both files hold must have the same value.
    """
    runs: dict[str, dict[str, dict[int, float]]] = {}
    for path in summaries:
        for group in json.loads(path.read_text())["groups"]:
            tags = [parse_tag(Path(e).name) for e in group["evals"]]
            if not all(tags):
                continue  # not a grid group
            for m in METRICS:
                values = group["metrics"].get(m, {}).get("values", [])
                if len(values) != len(tags):
                    continue  # a run without this metric: no way to tell which
                for tag, value in zip(tags, values, strict=True):
                    name, seed = tag
                    _check_agree(name, m, seed, runs.get(name, {}).get(m, {}), value, path)
                    runs.setdefault(name, {}).setdefault(m, {})[seed] = value
    return runs


def _check_agree(name: str, metric: str, seed: int, known: dict[int, float], value: float, path: Path) -> None:
    if seed in known and not math.isclose(known[seed], value, abs_tol=1e-9):
        raise SystemExit(f"error: {path}: {name} seed {seed} {metric} = {value}, an earlier summary has "
                         f"{known[seed]} (not the same run)")


def cell(d: PairedDiff) -> str:
    if d.n == 0:
        return "-"
    if d.n == 1:
        return f"{d.mean:+.2f} (n=1)"
    text = f"{d.mean:+.2f} [{d.low:+.2f}, {d.high:+.2f}] (n={d.n})"
    return f"**{text}**" if d.low > 0 or d.high < 0 else text


def configurations(runs: dict[str, dict[str, dict[int, float]]]) -> list[str]:
    """One row per run name: seeds, then mean +- sample std of each metric."""
    lines = ["| run | seeds | " + " | ".join(METRICS.values()) + " |", "|---|---|" + "---:|" * len(METRICS)]
    for name, metrics in runs.items():
        cells = []
        for m in METRICS:
            values = list(metrics.get(m, {}).values())
            std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            cells.append(f"{np.mean(values):.2f} ± {std:.2f}" if values else "-")
        seeds = ",".join(map(str, sorted(next(iter(metrics.values()), {}))))
        lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + " |")
    return lines


def report(runs: dict[str, dict[str, dict[int, float]]]) -> str:
    lines = [*configurations(runs), "",
             "| contrast (a - b, paired by seed) | " + " | ".join(METRICS.values()) + " |",
             "|---|" + "---:|" * len(METRICS)]
    for question, a, b in CONTRASTS:
        if a in runs and b in runs:
            cells = [cell(paired_difference(runs[a].get(m, {}), runs[b].get(m, {}))) for m in METRICS]
            lines.append(f"| {question} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summaries", type=Path, nargs="+", help="`ser compare` summary.json files, oldest first.")
    parser.add_argument("--out", type=Path, help="Also write the table here (Markdown).")
    args = parser.parse_args(argv)
    for path in args.summaries:
        if not path.is_file():
            parser.exit(2, f"error: {path}: no such summary (run ser compare first)\n")
    try:
        runs = per_seed(args.summaries)
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
        parser.exit(2, f"error: {' '.join(map(str, args.summaries))}: not summaries of `ser compare` "
                       f"({type(err).__name__}: {err})\n")
    text = report(runs)
    print(text, end="")
    if args.out:
        write_text_atomic(args.out, text)


if __name__ == "__main__":
    main()
