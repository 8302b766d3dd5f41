"""A grid's results as one long table: `python -m experiments.results_table OUT DEST.csv`.

One row per run of the grid folder OUT (`experiments/out/NAME`, see `ser_cli.sweep_grid`): the run's name and seed, its
configuration (method, SER, config hash, the train settings that tell runs apart), every metric of its evaluation
(`evals/TAG/metrics.json`), its accuracy curve (`plots/avg_accuracy.csv` as `class_il_after_task_K`, ...), its
training metrics (`runs/TAG/metrics.json`, prefixed `train_`; from `train_log.csv` the stream cross-entropy at
each task's end, `stream_ce_end_task_K`, 0-based as the log), and its provenance: code version, torch version and
threads, device, CPU ISA, the data fingerprint, the sha256 of the maps file, of the saliency model and of the
classifier's start, and SER's target source with the branch's CC against it before training. This replaces a folder
of JSON files per run in the repository (a few KB a run); tables in the README and docs/ are regenerated from it
(`experiments.contrasts`). Rows are sorted by (name, seed); columns by first appearance.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

from experiments.task_end_losses import task_end_ce
from ser_cli.sweep_grid import parse_tag

TASK_END_STEPS = 10  # a task's end: the mean of its last 10 steps, as `experiments.task_end_losses`
SETTINGS = ("buffer_size", "classifier_init", "n_tasks", "classes_per_task", "backbone", "epochs", "sal_lr",
            "saliency_frozen")


def run_row(eval_dir: Path, run_dir: Path | None) -> dict[str, Any]:
    """The table row of one evaluation folder and (when present) its run folder."""
    name, seed = parse_tag(eval_dir.name) or (eval_dir.name, None)
    info = json.loads((eval_dir / "run.json").read_text())
    row: dict[str, Any] = {"name": name, "seed": info.get("seed", seed), "method": info.get("method"),
                           "ser": info.get("ser"), "config_hash": info.get("config_hash")}
    row.update({key: info.get("settings", {}).get(key) for key in SETTINGS})
    row.update(json.loads((eval_dir / "metrics.json").read_text()))
    row.update(curve_columns(eval_dir / "plots" / "avg_accuracy.csv"))
    if run_dir is not None and (run_dir / "metrics.json").is_file():
        train = json.loads((run_dir / "metrics.json").read_text())
        row.update({f"train_{k}": v for k, v in train.items()})
    if run_dir is not None and (run_dir / "train_log.csv").is_file():
        ends = task_end_ce(run_dir / "train_log.csv", TASK_END_STEPS)
        row.update({f"stream_ce_end_task_{t}": ce for t, ce in ends.items()})
    row.update(provenance_columns(info))
    return row


def curve_columns(path: Path) -> dict[str, float]:
    """Average accuracy after each task (`class_il_after_task_1`, `task_il_after_task_1`, ...): the curves."""
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {f"{kind}_after_task_{r['task']}": float(r[kind]) for kind in ("class_il", "task_il") for r in rows}


def provenance_columns(info: dict[str, Any]) -> dict[str, Any]:
    """What made the run, flat: code, torch, threads, device, ISA, input hashes, target source."""
    code = info.get("train_code") or {}
    host = info.get("train_host") or {}
    targets = info.get("train_targets") or {}
    return {
        "code_commit": code.get("commit"), "code_dirty": code.get("dirty"),
        "torch": host.get("torch"), "torch_threads": host.get("torch_threads"), "device": host.get("device"),
        "cpu_isa": (info.get("train_machine") or {}).get("isa"),
        "data_fingerprint": info.get("data", {}).get("fingerprint"),
        "maps_sha256": targets.get("maps_sha256"),
        "saliency_checkpoint_sha256": info.get("saliency_checkpoint_sha256"),
        "init_checkpoint_sha256": info.get("init_checkpoint_sha256"),
        "targets": targets.get("label"), "targets_self_made": targets.get("self_made"),
        "targets_start_cc": targets.get("start_cc"),
        "eval_code_commit": (info.get("code") or {}).get("commit"),
    }


def grid_rows(out: Path, runs_dir: Path | None = None) -> list[dict[str, Any]]:
    """Every finished evaluation of the grid folder `out`, as rows sorted by (name, seed)."""
    runs_dir = runs_dir or out / "runs"
    rows = [run_row(p.parent, runs_dir / p.parent.name) for p in (out / "evals").glob("*/metrics.json")]
    return sorted(rows, key=lambda r: (str(r["name"]), r["seed"] if r["seed"] is not None else -1))


def summary_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows rebuilt from a `ser compare` summary.json (grids whose snapshot kept only that): one per evaluation,
    with every metric whose values cover all the group's runs (a metric with a missing value cannot be placed)."""
    rows = []
    for group in summary["groups"]:
        for i, path in enumerate(group["evals"]):
            name, seed = parse_tag(Path(path).name) or (Path(path).name, group["seeds"][i])
            row: dict[str, Any] = {"name": name, "seed": seed, "method": group.get("method"), "ser": group.get("ser"),
                                   "config_hash": group.get("config_hash"), "group": group.get("label"),
                                   "data_fingerprint": group.get("data_fingerprint"),
                                   "maps_method": group.get("maps_method")}
            row.update({k: m["values"][i] for k, m in group["metrics"].items() if m["n"] == len(group["evals"])})
            rows.append(row)
    return sorted(rows, key=lambda r: (str(r["name"]), r["seed"] if r["seed"] is not None else -1))


def write_table(rows: list[dict[str, Any]], dest: Path) -> None:
    """Write `rows` as CSV (empty cells for missing values), atomically."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    tmp = dest.with_name(dest.name + ".partial")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(dest)


def read_table(path: Path) -> list[dict[str, str]]:
    """The rows of a results table, as strings (`experiments.contrasts` converts what it uses)."""
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the grid's folder, e.g. experiments/out/e1")
    parser.add_argument("dest", type=Path, help="the table to write, e.g. experiments/results/e1/runs.csv")
    parser.add_argument("--runs-dir", type=Path, help="the grid's runs_dir when it is not OUT/runs")
    parser.add_argument("--from-summary", action="store_true",
                        help="OUT is a `ser compare` summary.json (a snapshot without per-run folders)")
    args = parser.parse_args(argv)
    if args.from_summary:
        rows = summary_rows(json.loads(args.out.read_text()))
        write_table(rows, args.dest)
        print(f"{len(rows)} runs -> {args.dest}")
        return 0
    if not (args.out / "evals").is_dir():
        print(f"error: {args.out / 'evals'}: no such folder (run the grid first)", file=sys.stderr)
        return 2
    rows = grid_rows(args.out, args.runs_dir)
    write_table(rows, args.dest)
    print(f"{len(rows)} runs -> {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
