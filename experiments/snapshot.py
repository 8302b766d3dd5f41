"""Keep a grid's results without its weights: `python -m experiments.snapshot OUT DEST`.

A grid's folder (`experiments/out/NAME`, ignored by git) holds model weights of ~14 MB a run; what the reports need
is a few KB: per evaluation `metrics.json`, `run.json` and `plots/*.csv` (what `ser compare` reads), per run
`train_log.csv`, `metrics.json` and `run.json` (what `experiments.task_end_losses` reads). This copies those of
every finished evaluation into DEST/evals/TAG and DEST/runs/TAG, so that a committed snapshot can be compared again
(`ser compare DEST/evals/* ...`) and a later session can run only the missing runs and compare both.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

EVAL_FILES = ("metrics.json", "run.json", "plots/avg_accuracy.csv", "plots/accuracy_matrix.csv",
              "plots/robustness.csv")
RUN_FILES = ("train_log.csv", "metrics.json", "run.json")


def snapshot(out: Path, dest: Path, runs_dir: Path | None = None) -> list[str]:
    """Copy the essentials of every finished evaluation under OUT/evals (and its run); the tags copied."""
    runs_dir = runs_dir or out / "runs"
    tags = sorted(p.parent.name for p in (out / "evals").glob("*/metrics.json"))
    for tag in tags:
        for src_root, dst_root, files in ((out / "evals", dest / "evals", EVAL_FILES),
                                          (runs_dir, dest / "runs", RUN_FILES)):
            for name in files:
                src = src_root / tag / name
                if src.is_file():
                    (dst_root / tag / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, dst_root / tag / name)
    return tags


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="The grid's folder (its `out`), e.g. experiments/out/protocol.")
    parser.add_argument("dest", type=Path, help="Where the snapshot goes, e.g. experiments/results/protocol.")
    parser.add_argument("--runs-dir", type=Path, help="The grid's runs_dir when it is not OUT/runs.")
    args = parser.parse_args(argv)
    if not (args.out / "evals").is_dir():
        parser.exit(2, f"error: {args.out / 'evals'}: no such folder (run the grid first)\n")
    tags = snapshot(args.out, args.dest, args.runs_dir)
    print(f"{len(tags)} evaluations -> {args.dest}")


if __name__ == "__main__":
    main()
