"""The comparison's table: per configuration, both implementations' mean ± sample std over seeds and their paired
difference with its 95 % t-interval (`ser_cli.report.pairs.paired_difference`, as every report of ser)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from experiments.avalanche.ser_side import METHODS
from ser_cli.report.pairs import paired_difference


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for one value)."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), (float(arr.std(ddof=1)) if len(arr) > 1 else None)


def interval(a: list[float], b: list[float]) -> tuple[float, float] | None:
    """95 % t-interval of the paired difference a - b (None for one pair)."""
    diff = paired_difference(dict(enumerate(a)), dict(enumerate(b)))
    return None if math.isnan(diff.low) else (diff.low, diff.high)


def fmt(mean: float, std: float | None, sign: str = "") -> str:
    return f"{mean:{sign}.2f}" if std is None else f"{mean:{sign}.2f} ± {std:.2f}"


def config_key(record: dict[str, Any]) -> str:
    """`derpp`, `er_ace`, or `er_ace+SWAPS` for an ablation variant."""
    variant = record.get("variant", "avalanche")
    return record["method"] if variant == "avalanche" else f"{record['method']}+{variant}"


def config_label(key: str) -> str:
    method, _, swaps = key.partition("+")
    return METHODS[method] if not swaps else f"{METHODS[method]} (Avalanche's, swapped: {swaps.replace('+', ' + ')})"


def _order(key: str) -> tuple[int, int, str]:
    method, _, swaps = key.partition("+")
    return list(METHODS).index(method), swaps.count("+") + bool(swaps), swaps


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per configuration: mean ± sample std over seeds of both implementations, the paired difference with its 95 %
    t-interval, and for an ablation variant its paired difference from Avalanche's unchanged method."""
    out: dict[str, Any] = {}
    by_key = {(config_key(r), r["seed"]): r for r in records}
    for key in sorted({k for k, _ in by_key}, key=_order):
        recs = sorted((r for (k, _), r in by_key.items() if k == key), key=lambda r: r["seed"])
        ava = [r["avalanche"]["class_il"] for r in recs]
        ser = [r["ser"]["class_il"] for r in recs]
        diff = [a - s for a, s in zip(ava, ser, strict=True)]
        out[key] = {"seeds": [r["seed"] for r in recs], "avalanche": mean_std(ava), "ser": mean_std(ser),
                    "avalanche_minus_ser": mean_std(diff), "avalanche_minus_ser_ci95": interval(ava, ser)}
        base = [by_key.get((recs[0]["method"], r["seed"])) for r in recs]
        if key != recs[0]["method"] and all(base):
            ours, theirs = [r["avalanche"]["class_il"] for r in recs], [b["avalanche"]["class_il"] for b in base]
            shift = [a - b for a, b in zip(ours, theirs, strict=True)]
            out[key].update(minus_unchanged=mean_std(shift), minus_unchanged_ci95=interval(ours, theirs))
    return out


def markdown(records: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    """The per-seed table and the mean ± sample std table."""
    lines = ["Final class-IL accuracy (%), argmax over all 20 classes after task 5, mean over the 5 tasks; task-IL "
             "likewise; training seconds on one thread of a shared 2-core CPU.", "",
             "| configuration | seed | Avalanche | ser | Avalanche - ser | Avalanche task-IL | ser task-IL | "
             "Avalanche s | ser s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: (_order(config_key(r)), r["seed"])):
        a, s = r["avalanche"], r["ser"]
        lines.append(f"| {config_label(config_key(r))} | {r['seed']} | {a['class_il']:.2f} | {s['class_il']:.2f} | "
                     f"{a['class_il'] - s['class_il']:+.2f} | {a['task_il']:.2f} | {s['task_il']:.2f} | "
                     f"{a['train_seconds']:.0f} | {s['train_seconds']:.0f} |")
    lines += ["", "Mean ± sample std over seeds; paired differences (same seed) with their 95 % t-interval; for an "
              "ablation variant also its difference from Avalanche's unchanged method.", "",
              "| configuration | seeds | Avalanche | ser | Avalanche - ser | 95 % interval | variant - unchanged | "
              "95 % interval |", "|---|---|---|---|---|---|---|---|"]
    for key, m in summary.items():
        shift = fmt(*m["minus_unchanged"], sign="+") if "minus_unchanged" in m else ""
        lines.append(f"| {config_label(key)} | {len(m['seeds'])} | {fmt(*m['avalanche'])} | {fmt(*m['ser'])} | "
                     f"{fmt(*m['avalanche_minus_ser'], sign='+')} | {_interval(m['avalanche_minus_ser_ci95'])} | "
                     f"{shift} | {_interval(m.get('minus_unchanged_ci95'))} |")
    return "\n".join(lines) + "\n"


def _interval(ci: tuple[float, float] | None) -> str:
    return "" if ci is None else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


def write_table(out: Path) -> str:
    """Rebuild `avalanche_compare.{json,md}` from every run file in `out/runs/`; returns the markdown."""
    records = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]
    summary = summarize(records)
    (out / "avalanche_compare.json").write_text(json.dumps({"runs": records, "summary": summary}, indent=2) + "\n")
    text = markdown(records, summary)
    (out / "avalanche_compare.md").write_text(text)
    return text

