"""What a continual-training run is made of, so that a rerun resumes or skips only the run it belongs to.

A run is identified by its train settings (`config_hash`), its seed and the identities of its inputs: the data
file's fingerprint, the maps file (the data file it was made for and the saliency model that made it) and the sha256
of the saliency and classifier-initialisation checkpoints. The identity is stored in `checkpoint.pt` and in
`run.json`; a rerun of `ser train` with the same `--out` compares them before touching anything.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from ser_cli.runtime.errors import UserError
from ser_cli.runtime.output_folder import has_log_header

FINISHED = ("model.pt", "run.json", "metrics.json")


# The provenance keys (`model.pt`, `run.json`, an evaluation's `run.json`) of the checkpoints a run started from: the
# saliency network (SER, or the classifier's start under classifier_init=saliency) and a classification checkpoint.
START_WEIGHTS = ("saliency_checkpoint_sha256", "init_checkpoint_sha256")

@dataclass(frozen=True)
class RunIdentity:
    """The inputs and settings a run of `ser train` depends on."""

    config_hash: str
    seed: int
    data_fingerprint: str
    maps: str | None
    saliency_checkpoint_sha256: str | None
    classifier_init: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_legacy_run_folder(out: Path) -> bool:
    """A run folder `ser train` wrote before run folders carried a manifest: its `run.json` holds an identity, or
    it holds nothing but an interrupted run's `checkpoint.pt` (and files set aside from it), or what DVC leaves of a
    run before rerunning it (its cache-less outs: `metrics.json`, `headline.json` and a `train_log.csv` with train's
    columns)."""
    out = Path(out)
    try:
        saved = json.loads((out / "run.json").read_text())
    except (OSError, ValueError):
        saved = None
    if isinstance(saved, dict) and isinstance(saved.get("identity"), dict):
        return True
    files = [p.name for p in out.rglob("*") if not p.is_dir()]
    if "checkpoint.pt" in files and all(name.startswith("checkpoint.pt") for name in files):
        return True
    return set(files) <= {"metrics.json", "headline.json", "train_log.csv"} and has_log_header(
        out / "train_log.csv", "step,task,epoch,")



def check_run_folder(out: Path, identity: RunIdentity, start: str) -> Literal["fresh", "complete"]:
    """`complete` when `out` holds this very run finished; `fresh` when training may (re)start or resume in it.

    Raises:
        UserError: `out` is a file, or holds a finished run of other inputs or settings and `start` is not
            `overwrite`.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    if not all((out / name).is_file() for name in FINISHED):
        return "fresh"
    try:
        saved = json.loads((out / "run.json").read_text()).get("identity")
    except (OSError, json.JSONDecodeError):
        saved = None
    if saved == identity.to_dict() and start != "overwrite":
        return "complete"
    if start == "overwrite":
        return "fresh"
    raise UserError(f"--out {out}: holds a finished run of other inputs or settings; pass --overwrite to replace "
                    "it, or choose another folder")

