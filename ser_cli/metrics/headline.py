"""The few numbers per stage that `dvc metrics show` prints: `headline.json` beside each flat `metrics.json`.

`dvc metrics show` prints one column per key of every declared metrics file, so the full flat files (26 to 33 keys
per stage) made 1,302-character lines. `dvc.yaml` therefore declares these headline files as the pipeline's metrics
and each `metrics.json` as a plain out that stays in git, still written whole: `ser compare`, `ser sweep` and
`dvc metrics show runs/X/metrics.json` read every number from it. A headline value is the `metrics.json` value
itself under a short name (short so that the table of the whole demo stays within 100 columns); a key the stage did
not write (e.g. no attack run) is left out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from ser_cli.runtime.atomic import write_json_atomic

# headline name -> metrics.json key
CONTINUAL = {"class_il": "class_il_final_avg_acc", "task_il": "task_il_final_avg_acc",
             "forgetting": "class_il_forgetting"}
TRAIN = CONTINUAL
EVALUATE = {**CONTINUAL, "clean": "clean_acc"}  # plus PGD at the smallest epsilon: `pgd_epsN` (N/255)
SALIENCY = {"cc": "cc"}  # pretrain-saliency: held-out CC; precompute: CC of the maps against the data's own maps
PGD_PREFIX = "pgd_acc_eps_"


def headline(metrics: Mapping[str, float], keys: Mapping[str, str]) -> dict[str, float]:
    """`metrics` under the short names of `keys` (headline name -> metrics key), those present only."""
    return {name: metrics[key] for name, key in keys.items() if key in metrics}


def evaluation_headline(metrics: Mapping[str, float]) -> dict[str, float]:
    """`ser evaluate`'s headline: the continual numbers, clean accuracy and PGD accuracy at the smallest epsilon,
    where PGD bites before every image falls (at the largest one the demo's runs are all at 0 %)."""
    pgd = sorted((k for k in metrics if k.startswith(PGD_PREFIX)), key=lambda k: float(k[len(PGD_PREFIX):]))
    keys = {**EVALUATE, **({f"pgd_eps{pgd[0][len(PGD_PREFIX):]}": pgd[0]} if pgd else {})}
    return headline(metrics, keys)


def headline_path(metrics_path: Path) -> Path:
    """Where the headline of `metrics_path` goes: `FOLDER/metrics.json` -> `FOLDER/headline.json`, any other
    `NAME.json` -> `NAME.headline.json` (`ser precompute --metrics metrics/precompute.json`)."""
    metrics_path = Path(metrics_path)
    if metrics_path.name == "metrics.json":
        return metrics_path.with_name("headline.json")
    return metrics_path.with_suffix(".headline.json")


def write_headline(metrics_path: Path, numbers: Mapping[str, float]) -> Path:
    """Write `numbers` (a `headline(...)`) beside `metrics_path`; returns the file written."""
    path = headline_path(metrics_path)
    write_json_atomic(path, dict(numbers))
    return path


def is_headline_file(path: Path) -> bool:
    """Whether `path` reads as a headline ser wrote (a JSON object of headline names), so it may be replaced."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    names = {*EVALUATE, *SALIENCY}
    return isinstance(data, dict) and all(k in names or k.startswith("pgd_eps") for k in data)
