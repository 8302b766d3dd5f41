"""Evaluation folders (`ser evaluate --out EVAL`) loaded and grouped by configuration, with mean and std per group.

Runs are grouped by (config hash, data fingerprint, maps method): the config hash (written by `ser train`, copied by
`ser evaluate` into `EVAL/run.json`) is the sha256 of the resolved `train` section without its seed, so the seeds of
one configuration on one dataset fall into one group; the maps method (`run.json`'s `maps_method`: `model`, or a
classical baseline of `ser precompute --method`) keeps SER against a predictor's maps apart from SER against classical
ones (evaluations made before it was recorded count as `model`). Each metric is summarised by its mean and its sample
standard deviation (ddof = 1, as papers report "mean +- std over seeds"; 0 for a single run) over the runs that
report it. The spurious-feature drop (Bellitto et al., NeurIPS 2024, section 5.3) pairs a group trained on a spurious
dataset with the group of the same configuration trained on the clean dataset with the *same test split* (equal test
fingerprints: the protocol leaves test images untouched), and reports clean mean minus spurious mean.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ser_cli.runs.run_identity import START_WEIGHTS
from ser_cli.runtime.errors import UserError
from ser_cli.runtime.json_files import read_json_object

DROP_METRICS = ("class_il_final_avg_acc", "task_il_final_avg_acc")


@dataclass
class EvalRecord:
    """One evaluation folder.

    Attributes:
        path: The folder.
        metrics: Its flat `metrics.json`.
        info: Its `run.json` (config hash, method, SER, seed, data identity).
        avg_accuracy: {"task": (T,) 1-based task numbers, "class_il": (T,), "task_il": (T,)} from
            `plots/avg_accuracy.csv` (a `joint` run has only its last task).
        robustness: {attack: {eps_255: accuracy}} from `plots/robustness.csv` (epsilon 0 = clean).
    """

    path: Path
    metrics: dict[str, float]
    info: dict[str, Any]
    avg_accuracy: dict[str, np.ndarray]
    robustness: dict[str, dict[float, float]]

    @property
    def group_key(self) -> tuple[str, ...]:
        # the settings, the data, the maps and the weights it started from: runs of an untrained and of a
        # pretrained saliency network share every setting but are different configurations
        return (str(self.info["config_hash"]), str(self.info["data"]["fingerprint"]), maps_method(self.info),
                *(str(self.info.get(key) or "") for key in START_WEIGHTS), targets_key(self.info))


def maps_method(info: dict[str, Any]) -> str:
    """What made the maps an evaluation used (`run.json`'s `maps_method`); `model` when not recorded."""
    return str(info.get("maps_method") or "model")


def targets_key(info: dict[str, Any]) -> str:
    """What made a SER run's training targets, as a grouping key ('' for plain runs and unrecorded ones)."""
    targets = info.get("train_targets") or {}
    return f"{targets.get('method')}:{targets.get('model_sha256')}:{targets.get('self_made')}" if targets else ""


def targets_label(info: dict[str, Any]) -> str:
    """The training target source in a few characters: `from-dataset`, `model 1a2b3c4`, `self (model ...)`; `-`
    for plain runs, `unrecorded` for SER runs trained before it was recorded."""
    if not info.get("ser"):
        return "-"
    return str((info.get("train_targets") or {}).get("label") or "unrecorded")


def load_eval(path: Path) -> EvalRecord:
    """Read one evaluation folder; UserError (one line) when it is not one."""
    path = Path(path)
    for name in ("metrics.json", "run.json"):
        if not (path / name).is_file():
            raise UserError(f"{path}: not an evaluation folder (no {name}); make it with `ser evaluate --out {path}`")
    metrics = _read_json(path / "metrics.json")
    info = _read_json(path / "run.json")
    data = info.get("data")
    if not isinstance(info.get("config_hash"), str) or not isinstance(data, dict) or "fingerprint" not in data:
        raise UserError(f"{path / 'run.json'}: lacks config_hash or data.fingerprint; rerun `ser evaluate`")
    return EvalRecord(path, {k: _number(v, path / "metrics.json", k) for k, v in metrics.items()}, info,
                      _read_avg_accuracy(path),
                      _read_robustness(path))


def _read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path)


def _number(value: Any, path: Path | None = None, key: str = "") -> float:
    if value is None:
        return float("nan")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{path}: {key} must be a number or null (got {type(value).__name__})")
    return float(value)


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _read_avg_accuracy(path: Path) -> dict[str, np.ndarray]:
    rows = _read_csv(path / "plots" / "avg_accuracy.csv")
    return {key: np.array([float(r[key]) for r in rows]) for key in ("task", "class_il", "task_il")} if rows else {}


def _read_robustness(path: Path) -> dict[str, dict[float, float]]:
    out: dict[str, dict[float, float]] = {}
    for r in _read_csv(path / "plots" / "robustness.csv"):
        out.setdefault(r["attack"], {})[float(r["eps_255"])] = float(r["accuracy"])
    return out


@dataclass(frozen=True)
class Stat:
    """Mean, sample std (ddof 1; 0 for one value) and count of one metric over a group's runs."""

    mean: float
    std: float
    n: int
    values: tuple[float, ...]


def stat_of(values: list[float]) -> Stat:
    """Summarise the finite values; NaN mean when none is finite."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return Stat(float("nan"), float("nan"), 0, ())
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0
    return Stat(float(np.mean(finite)), std, len(finite), tuple(finite))


@dataclass
class Group:
    """The runs of one configuration on one dataset.

    Attributes:
        label: Display name (method, +SER, [spurious], and a hash suffix when names collide).
        records: Its evaluation folders, in the order given.
        stats: {metric: Stat} over the records.
        spurious_drop: {metric: clean mean - spurious mean} for a spurious group with a clean partner, else {}.
        clean_partner: Label of that clean group, or None.
    """

    label: str
    records: list[EvalRecord]
    stats: dict[str, Stat] = field(default_factory=dict)
    spurious_drop: dict[str, float] = field(default_factory=dict)
    clean_partner: str | None = None

    @property
    def info(self) -> dict[str, Any]:
        return self.records[0].info

    @property
    def spurious(self) -> bool:
        return bool(self.info["data"].get("spurious", False))


def group_evals(records: list[EvalRecord]) -> list[Group]:
    """Group by (config hash, data fingerprint) in order of first appearance, with stats and spurious drops."""
    by_key: dict[tuple[str, str], list[EvalRecord]] = {}
    for record in records:
        by_key.setdefault(record.group_key, []).append(record)
    groups = [Group(_base_label(rs[0].info), rs) for rs in by_key.values()]
    _disambiguate(groups)
    for g in groups:
        keys = dict.fromkeys(k for r in g.records for k in r.metrics)
        g.stats = {k: stat_of([r.metrics.get(k, float("nan")) for r in g.records]) for k in keys}
    _pair_spurious(groups)
    return groups


def _base_label(info: dict[str, Any]) -> str:
    label = str(info.get("label") or info.get("method", "run"))
    return f"{label} [spurious]" if info["data"].get("spurious") else label


def _disambiguate(groups: list[Group]) -> None:
    """Append what tells apart groups that share a label: the train settings that differ among them, then the data
    file's name, then the short config hash."""
    by_label: dict[str, list[Group]] = {}
    for g in groups:
        by_label.setdefault(g.label, []).append(g)
    for same in by_label.values():
        if len(same) < 2:
            continue
        settings = [{**g.info.get("settings", {}), "maps": maps_method(g.info)} for g in same]
        differ = [k for k in dict.fromkeys(k for s in settings for k in s)
                  if k not in ("seed", "checkpoint_every", "diagnostics_every")
                  and len({json.dumps(s.get(k), sort_keys=True) for s in settings}) > 1]
        for g, s in zip(same, settings, strict=True):
            if differ:
                g.label += " (" + ", ".join(f"{k}={_short_value(s.get(k))}" for k in differ) + ")"
    for suffix in (lambda g: Path(str(g.info["data"].get("path", ""))).stem,
                   lambda g: "saliency model " + str(g.info.get("saliency_checkpoint_sha256") or "-")[:7],
                   lambda g: "start " + str(g.info.get("init_checkpoint_sha256") or "-")[:7],
                   lambda g: g.info["config_hash"][:7], lambda g: g.info["data"]["fingerprint"][:7]):
        by_label = {}
        for g in groups:
            by_label.setdefault(g.label, []).append(g)
        for same in by_label.values():
            if len(same) > 1 and len({suffix(g) for g in same}) > 1:  # only a suffix that tells them apart
                for g in same:
                    g.label = f"{g.label} #{suffix(g)}"


def _short_value(value: Any) -> str:
    return "".join(map(str, value)) if isinstance(value, list) else str(value)


def _pair_spurious(groups: list[Group]) -> None:
    for g in groups:
        if not g.spurious:
            continue
        partners = [c for c in groups if not c.spurious and c.info["config_hash"] == g.info["config_hash"]
                    and c.info["data"].get("test_fingerprint") == g.info["data"].get("test_fingerprint")]
        if partners:
            clean = partners[0]
            g.clean_partner = clean.label
            g.spurious_drop = {m: clean.stats[m].mean - g.stats[m].mean for m in DROP_METRICS
                               if m in clean.stats and m in g.stats}


def summary(groups: list[Group], headline: list[str]) -> dict[str, Any]:
    """JSON-able summary of every group: identity, runs, every metric's mean / std / n / values, drops; and the
    warnings (`mixed_hosts`, `repeated_seeds`)."""
    host = mixed_hosts(groups)
    return {
        "grouping": "config_hash + data fingerprint + maps method + start weights; std is the sample standard "
                    "deviation (ddof=1) over runs",
        "headline": headline,
        "groups": [_group_summary(g) for g in groups],
        "warnings": [*([host] if host else []), *repeated_seeds(groups)],
    }


def repeated_seeds(groups: list[Group]) -> list[str]:
    """A warning per group holding one seed more than once: the same run evaluated twice, or runs that differ in
    something `run.json` does not record; either way its mean and std are not over independent seeds."""
    warnings = []
    for g in groups:
        by_seed: dict[Any, list[str]] = {}
        for r in g.records:
            by_seed.setdefault(r.info.get("seed"), []).append(str(r.path))
        warnings += [f"{g.label}: seed {seed} {len(paths)} times ({', '.join(paths)}); its mean and std are not "
                     "over distinct seeds" for seed, paths in by_seed.items() if len(paths) > 1]
    return warnings


def mixed_hosts(groups: list[Group]) -> str | None:
    """A warning when the compared runs were trained on different devices or torch thread counts, else None.

    The same seed gives other numbers with another thread count, so such runs do not compare like with like; runs
    that do not record it (trained before it was recorded) are left out.
    """
    kinds: dict[str, int] = {}
    for r in (r for g in groups for r in g.records):
        host = r.info.get("train_host")
        if host:
            kind = f"{host.get('device')} with {host.get('torch_threads')} torch thread(s)"
            kinds[kind] = kinds.get(kind, 0) + 1
    if len(kinds) < 2:
        return None
    counts = ", ".join(f"{kind}: {n} run{'s' if n > 1 else ''}" for kind, n in kinds.items())
    return (f"the runs were trained on different hosts ({counts}); the same seed gives other numbers on each, "
            "so compare runs of one kind")


def _group_summary(g: Group) -> dict[str, Any]:
    info = g.info
    return {
        "label": g.label,
        "config_hash": info["config_hash"],
        "method": info.get("method"),
        "ser": info.get("ser"),
        "data_fingerprint": info["data"]["fingerprint"],
        "maps_method": maps_method(info),
        "targets": targets_label(info),
        "spurious": g.spurious,
        "n_runs": len(g.records),
        "seeds": [r.info.get("seed") for r in g.records],
        "evals": [str(r.path) for r in g.records],
        "metrics": {k: {"mean": s.mean, "std": s.std, "n": s.n, "values": list(s.values)} for k, s in g.stats.items()},
        "spurious_drop": g.spurious_drop or None,
        "clean_partner": g.clean_partner,
    }
