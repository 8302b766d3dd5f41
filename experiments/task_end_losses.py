"""How trained is the classifier when each task ends? `python -m experiments.task_end_losses RUNS_DIR [--last 10]`.

Reads `train_log.csv` of every finished run folder `NAME_sSEED` (one with its `metrics.json`; a grid snapshot of
`experiments.snapshot` is enough) in RUNS_DIR and prints, per configuration NAME (mean +- std
over seeds), the stream cross-entropy averaged over the last N steps of each task, and the means of the modulation
diagnostics (`mod_norm_ratio_i`, `mod_zeroed_i`) that SER runs log. A markdown table on stdout, JSON with `--json`.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from ser_cli.sweep_grid import parse_tag


def task_end_ce(log: Path, last: int) -> dict[int, float]:
    """Mean stream CE over the last `last` steps of each task of one run."""
    rows = list(csv.DictReader(log.open()))
    by_task: dict[int, list[float]] = defaultdict(list)
    for row in rows:
        by_task[int(row["task"])].append(float(row["stream_ce"]))
    return {t: float(np.mean(v[-last:])) for t, v in sorted(by_task.items())}


def diagnostics(log: Path) -> dict[str, float]:
    """Run means of the logged modulation diagnostics (empty for a plain run)."""
    rows = list(csv.DictReader(log.open()))
    keys = [k for k in (rows[0] if rows else {}) if k.startswith("mod_")]
    return {k: float(np.mean([float(r[k]) for r in rows if r.get(k)])) for k in keys}


def summarize(runs_dir: Path, last: int) -> dict[str, dict]:
    groups: dict[str, list[Path]] = defaultdict(list)
    for folder in sorted(runs_dir.iterdir()):
        tag = parse_tag(folder.name)
        if tag and (folder / "train_log.csv").is_file() and (folder / "metrics.json").is_file():
            groups[tag[0]].append(folder / "train_log.csv")
    out = {}
    for name, logs in groups.items():
        ce = [task_end_ce(log, last) for log in logs]
        diag = [diagnostics(log) for log in logs]
        tasks = sorted(ce[0])
        out[name] = {"n": len(logs),
                     "stream_ce_task_end": {t: _stat([c[t] for c in ce if t in c]) for t in tasks},
                     "diagnostics": {k: _stat([d[k] for d in diag if k in d]) for k in diag[0]}}
    return out


def _stat(values: list[float]) -> list[float]:
    return [float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0]


def markdown(summary: dict[str, dict]) -> str:
    tasks = sorted({t for s in summary.values() for t in s["stream_ce_task_end"]})
    head = ["run", "n", *(f"CE end of task {t}" for t in tasks), "norm ratio stem / s1 / s2 / s3 / s4",
            "zeroed stem / s4"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in summary.items():
        ce = [f"{m:.2f} ± {sd:.2f}" for m, sd in (s["stream_ce_task_end"][t] for t in tasks)]
        d = s["diagnostics"]
        ratio = " / ".join(f"{d[f'mod_norm_ratio_{i}'][0]:.2f}" for i in range(5)) if d else "-"
        zeroed = f"{d['mod_zeroed_0'][0]:.2f} / {d['mod_zeroed_4'][0]:.2f}" if d else "-"
        lines.append("| " + " | ".join([name, str(s["n"]), *ce, ratio, zeroed]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("--last", type=int, default=10, help="steps at the end of each task to average")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    summary = summarize(args.runs_dir, args.last)
    print(json.dumps(summary, indent=2) if args.json else markdown(summary))


if __name__ == "__main__":
    main()
