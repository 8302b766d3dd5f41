"""Two older snapshots as long result tables, like every grid's: `python -m experiments.legacy_tables`.

`experiments/results/avalanche/avalanche_compare.json` (the Avalanche cross-check, `experiments.avalanche_compare`)
and `experiments/results/gradients/*.json` (`experiments.gradient_norms`) predate the one-table-per-grid format. This
writes `runs.csv` beside each, one row per run (name, seed, metrics), so that `experiments.tables` can check the
figures the docs quote from them. Avalanche rows are named `avalanche_<method>[+<variant>]`, and the `ser` run each was
compared with `ser_<method>`; gradient rows carry, per block, the mean gradient norm, the relative step and the
gradient norm as a ratio to plain DER++ from random weights of the same seed (`grad_ratio_<block>`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from experiments.results_table import write_table
from ser_cli.sweep_grid import parse_tag

RESULTS = Path(__file__).resolve().parent / "results"
BLOCKS = {"blocks.0": "stem", "blocks.1": "stage1", "blocks.2": "stage2", "blocks.3": "stage3", "blocks.4": "stage4",
          "head": "head"}
GRADIENT_BASELINE = "derpp_rand"


def avalanche_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (implementation, method variant, seed); the `ser` side once per (method, seed)."""
    rows, seen = [], set()
    for run in report["runs"]:
        variant = run.get("variant") or "avalanche"
        suffix = "" if variant == "avalanche" else f"+{variant}"
        scalars = {k: v for k, v in run["avalanche"].items() if isinstance(v, (int, float))}
        rows.append({"name": f"avalanche_{run['method']}{suffix}", "seed": run["seed"], **scalars})
        if (run["method"], run["seed"]) not in seen:
            seen.add((run["method"], run["seed"]))
            rows.append({"name": f"ser_{run['method']}", "seed": run["seed"],
                         **{k: v for k, v in run["ser"].items() if isinstance(v, (int, float))}})
    return sorted(rows, key=lambda r: (r["name"], r["seed"]))


def gradient_rows(folder: Path) -> list[dict[str, Any]]:
    """One row per gradient-norm run `NAME_sSEED.json`, with ratios to the baseline run of its seed."""
    runs = {parse_tag(p.stem): json.loads(p.read_text()) for p in sorted(folder.glob("*_s*.json"))}
    rows = []
    for (name, seed), run in sorted(runs.items()):
        base = runs[(GRADIENT_BASELINE, seed)]["blocks"]
        row: dict[str, Any] = {"name": name, "seed": seed, "steps": run["steps"]}
        for block, label in BLOCKS.items():
            row[f"grad_norm_{label}"] = run["blocks"][block]["grad_norm"]
            row[f"relative_step_{label}"] = run["blocks"][block]["relative_step"]
            row[f"grad_ratio_{label}"] = run["blocks"][block]["grad_norm"] / base[block]["grad_norm"]
        rows.append(row)
    return rows


def main() -> None:
    report = json.loads((RESULTS / "avalanche" / "avalanche_compare.json").read_text())
    write_table(avalanche_rows(report), RESULTS / "avalanche" / "runs.csv")
    write_table(gradient_rows(RESULTS / "gradients"), RESULTS / "gradients" / "runs.csv")
    print("experiments/results/{avalanche,gradients}/runs.csv written")


if __name__ == "__main__":
    main()
