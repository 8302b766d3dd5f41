"""A finished run on disk: `RUN/model.pt` (the trained networks and what rebuilds them) and `RUN/run.json`.

`model.pt` (kind `ser-run`, format 1) holds the run's `TrainSettings`, the learner's weights (classifier with its
head, CoPE's prototypes included, and with SER the saliency network, its config and the modulation), the class names
and the fingerprints of the data and maps files it was trained on. `run.json` holds what `ser compare` groups by:
`config_hash` (sha256 of the train settings without `seed`, the bookkeeping that cannot change results
(`NOT_IN_CONFIG_HASH`) and the knobs of other methods,
so seeds of one configuration share it), `method`, `ser`, `seed` and `data_fingerprint`. `load_run` gives back an
object that evaluation and attacks use without caring whether SER is on.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ser_cli.continual.learner import Learner, restore_learner
from ser_cli.continual.settings import HASHED_WHEN_CHANGED, TrainSettings, method_knob_owners
from ser_cli.runtime.checkpoint import first_nonfinite, load_artifact, refuse_nonfinite, save_checkpoint
from ser_cli.runtime.errors import UserError
from ser_cli.runtime.json_files import read_json_object

KIND = "ser-run"
FORMAT_VERSION = 1
# `memory_format` and `compile` pick kernels (results equal up to float rounding), as the device does: not part of
# the identity
NOT_IN_CONFIG_HASH = ("seed", "checkpoint_every", "diagnostics_every", "activation_checkpointing", "memory_format",
                      "compile")
# DER's and DER++'s knobs were in every method's hash before other methods had knobs; they stay there so that no
# existing run changes identity. Any other method knob counts only for the methods that declare it.
HASHED_FOR_EVERY_METHOD = ("alpha", "beta")
# method knob -> the methods whose hash includes it (from the knobs' declarations in `continual.settings`)
METHOD_SETTINGS = {k: methods for k, methods in method_knob_owners().items() if k not in HASHED_FOR_EVERY_METHOD}


def config_hash(settings: TrainSettings) -> str:
    """Identity of a configuration across seeds: the settings less the seed, bookkeeping and other methods' knobs."""
    config = {k: v for k, v in settings.to_dict().items()
              if k not in NOT_IN_CONFIG_HASH and settings.method in METHOD_SETTINGS.get(k, (settings.method,))
              and not (k in HASHED_WHEN_CHANGED and v == HASHED_WHEN_CHANGED[k])}
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def save_run_model(path: Path, learner: Learner, settings: TrainSettings, class_names: list[str],
                   provenance: dict[str, Any]) -> None:
    """Write `model.pt` atomically; RunFailure, nothing written, when a weight is not finite."""
    refuse_nonfinite(learner.state_dict(), f"{path}: not written: weight")
    payload = {"kind": KIND, "format_version": FORMAT_VERSION, "settings": settings.to_dict(),
               "learner": learner.state_dict(), "class_names": class_names, "provenance": provenance}
    save_checkpoint(path, payload)


@dataclass
class LoadedRun:
    """A trained run, rebuilt on a device, in eval mode."""

    path: Path
    settings: TrainSettings
    learner: Learner
    class_names: list[str]
    provenance: dict[str, Any]
    accuracy: dict[str, np.ndarray]
    info: dict[str, Any]

    @property
    def data_fingerprint(self) -> str:
        return str(self.provenance.get("data_fingerprint", ""))

    @property
    def config_hash(self) -> str:
        return str(self.info.get("config_hash") or config_hash(self.settings))

    @property
    def classifier(self) -> nn.Module:
        """The classification backbone `logits` runs (with SER, modulated by the saliency branch's taps)."""
        return self.learner.classifier

    def logits(self, x01: Tensor) -> Tensor:
        """(B, 3, H, W) images in [0, 1] -> (B, n_classes); differentiable end to end through both branches."""
        return self.learner.eval_logits(x01)

    def saliency_map(self, x01: Tensor) -> Tensor | None:
        """The saliency branch's maps (B, H, W), each summing to 1, or None for a plain run."""
        if not self.learner.ser:
            return None
        maps = self.learner.predict_saliency(self.learner.normalize.unit(x01)).float()  # (B, H, W)
        return maps / maps.sum(dim=(1, 2), keepdim=True).clamp_min(1e-12)


def load_run(run_dir: Path | str, device: torch.device | str = "cpu") -> LoadedRun:
    """Rebuild the run in `run_dir`; one-line UserError when it is not a finished `ser train` run, or when any of
    its files is not what `ser train` writes (checked before anything is built)."""
    run_dir = Path(run_dir)
    model = run_dir / "model.pt"
    if not model.is_file():
        raise UserError(f"{run_dir}: no model.pt; not a finished `ser train` run (rerun it to finish)")
    payload = load_artifact(model, KIND, FORMAT_VERSION, "ser train", "run model", device)
    settings, learner_state = _check_payload(model, payload)
    accuracy, info = _read_matrices(run_dir, settings.n_tasks), _read_json(run_dir / "run.json")
    try:
        learner = restore_learner(settings, learner_state, device)
    except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as err:
        raise UserError(f"{model}: its weights do not fit its settings ({type(err).__name__}: "
                        f"{str(err).splitlines()[0][:120] if str(err) else ''})") from None
    return LoadedRun(run_dir, settings, learner, list(payload["class_names"]), dict(payload["provenance"]),
                     accuracy, info)


def _check_payload(path: Path, payload: dict[str, Any]) -> tuple[TrainSettings, dict[str, Any]]:
    """The run's settings and learner state, after checking every entry's type, the names and the weights."""
    for key, kind in (("settings", dict), ("learner", dict), ("class_names", list), ("provenance", dict)):
        if not isinstance(payload.get(key), kind):
            raise UserError(f"{path}: its {key} must be a {kind.__name__}; the file is damaged or crafted")
    try:
        settings = TrainSettings.from_mapping(payload["settings"])
    except UserError as err:
        raise UserError(f"{path}: settings: {err}") from None
    names = payload["class_names"]
    if len(names) != settings.n_classes or not all(isinstance(n, str) for n in names):
        raise UserError(f"{path}: holds {len(names)} class names for the {settings.n_classes} classes of its settings")
    bad = first_nonfinite(payload["learner"])
    if bad is not None:
        raise UserError(f"{path}: weight {bad} holds NaN or inf (the training diverged); retrain the run")
    return settings, payload["learner"]


def _read_matrices(run_dir: Path, n_tasks: int) -> dict[str, np.ndarray]:
    path = run_dir / "accuracy_matrix.json"
    raw = _read_json(path)
    missing = [k for k in ("class_il", "task_il") if not isinstance(raw.get(k), list)]
    if missing:
        raise UserError(f"{path}: {'missing' if not path.is_file() else 'lacks ' + ', '.join(missing)}; "
                        "not a finished `ser train` run (rerun it to finish)")
    return {k: _matrix(path, k, raw[k], n_tasks) for k in ("class_il", "task_il")}


def _matrix(path: Path, key: str, rows: list[Any], n_tasks: int) -> np.ndarray:
    """One accuracy matrix: at most `n_tasks` rows of `n_tasks` percentages (null: not evaluated)."""
    ok = len(rows) <= n_tasks and all(
        isinstance(row, list) and len(row) == n_tasks and all(
            v is None or isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 100 for v in row)
        for row in rows)
    if not ok:
        raise UserError(f"{path}: {key} must be rows of {n_tasks} accuracies in 0..100 or null, one row per task "
                        "trained; not what `ser train` writes")
    return np.array([[math.nan if v is None else v for v in row] for row in rows], dtype=float)


def _read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path) if path.exists() else {}
