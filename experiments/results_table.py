"""A grid's results as one long table: `python -m experiments.results_table OUT DEST.csv [--grid GRID.yaml]`.

One row per run of the grid folder OUT (`experiments/out/NAME`, see `experiments.run`): the run's name and seed, its
configuration (method, SER, config hash, the train settings that tell runs apart), every metric of its evaluation
(`evals/TAG/metrics.json`) and its training (`runs/TAG/metrics.json`, prefixed `train_`), and its provenance: code
version, torch version and threads, device, CPU ISA, the data fingerprint, the sha256 of the maps file, of the
saliency model and of the classifier's start, and SER's target source with the branch's CC against it before
training. This replaces a folder of JSON files per run in the repository: ~2 KB a run, and the README's tables are
regenerated from it (`experiments.contrasts`). Rows are sorted by (name, seed); columns by first appearance.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

from experiments.run import parse_tag

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
    if run_dir is not None and (run_dir / "metrics.json").is_file():
        train = json.loads((run_dir / "metrics.json").read_text())
        row.update({f"train_{k}": v for k, v in train.items() if not k.startswith("mod_")})
    row.update(provenance_columns(info))
    return row


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
    args = parser.parse_args(argv)
    if not (args.out / "evals").is_dir():
        print(f"error: {args.out / 'evals'}: no such folder (run the grid first)", file=sys.stderr)
        return 2
    rows = grid_rows(args.out, args.runs_dir)
    write_table(rows, args.dest)
    print(f"{len(rows)} runs -> {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
