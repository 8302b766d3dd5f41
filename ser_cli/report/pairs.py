"""Paired SER - plain differences over seeds, with 95 % t-intervals: "SER helps" as a number with an interval.

A SER group is paired with the plain group of the same method whose train settings are equal except for what only
SER has (`ser`, the modulation, the saliency branch's settings) on the same data file, preferring plain groups
evaluated against maps of the same method (SER against classical maps still pairs with the pipeline's plain runs).
When no plain group has the same `classifier_init`, the one that differs only in it is taken (the authors' protocol
starts plain classifiers from the saliency encoder and SER ones from random weights), and the pair says so. Runs are
matched by seed (same seed = same data order, same buffer draws and the same initial weights where both start
alike), the differences d_s = SER_s - plain_s are averaged, and the interval is mean(d) +- t(0.975, n-1) * sd(d) /
sqrt(n) (Student's t, two-sided 95 %; none for n < 2). An interval that excludes 0 is a difference the seeds support.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from ser_cli.report.compare import Group, maps_method

SER_ONLY = ("ser", "mnp", "mnp_blocks", "saliency_frozen", "sal_lr", "sal_encoder_lr_factor", "sal_momentum",
            "sal_weight_decay_decoder", "sal_weight_decay_encoder", "stream_taps")
IGNORED = ("seed", "checkpoint_every", "diagnostics_every")
PAIRED_METRICS = ("class_il_final_avg_acc", "task_il_final_avg_acc", "class_il_forgetting", "clean_acc")


@dataclass(frozen=True)
class PairedDiff:
    """SER - plain over the seeds both groups have, for one metric."""

    mean: float
    low: float
    high: float
    n: int
    diffs: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "ci95": [self.low, self.high], "n": self.n, "diffs": list(self.diffs)}


@dataclass
class Pair:
    """A SER group, its plain partner and the paired differences of each metric both report."""

    ser: Group
    plain: Group
    note: str
    diffs: dict[str, PairedDiff]


def paired_difference(a: dict[int, float], b: dict[int, float]) -> PairedDiff:
    """a - b over the seeds both have (finite values), with a two-sided 95 % Student-t interval."""
    seeds = sorted(s for s in a.keys() & b.keys() if math.isfinite(a[s]) and math.isfinite(b[s]))
    d = np.array([a[s] - b[s] for s in seeds], dtype=float)
    if len(d) == 0:
        return PairedDiff(math.nan, math.nan, math.nan, 0, ())
    mean = float(d.mean())
    if len(d) < 2:
        return PairedDiff(mean, math.nan, math.nan, 1, tuple(d))
    half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    return PairedDiff(mean, mean - half, mean + half, len(d), tuple(d))


def pair_groups(groups: list[Group], metrics: tuple[str, ...] = PAIRED_METRICS) -> list[Pair]:
    """Every SER group with its plain partner (see the module docstring), in the order of the SER groups."""
    pairs = []
    plain = [g for g in groups if not g.info.get("ser")]
    for g in groups:
        if not g.info.get("ser"):
            continue
        partner, note = _partner(g, plain)
        if partner is not None:
            diffs = {m: paired_difference(_by_seed(g, m), _by_seed(partner, m)) for m in metrics
                     if m in g.stats and m in partner.stats}
            pairs.append(Pair(g, partner, note, diffs))
    return pairs


def _partner(ser: Group, plain: list[Group]) -> tuple[Group | None, str]:
    same_data = [p for p in plain if p.info["data"]["fingerprint"] == ser.info["data"]["fingerprint"]]
    same_maps = [p for p in same_data if maps_method(p.info) == maps_method(ser.info)]
    same_data = same_maps or same_data
    exact = [p for p in same_data if _core(p) == _core(ser)]
    if exact:
        return exact[0], "same classifier_init"
    loose = [p for p in same_data if _core(p, "classifier_init") == _core(ser, "classifier_init")]
    if len(loose) == 1:
        init = loose[0].info["settings"].get("classifier_init")
        return loose[0], f"plain classifier from {init}, SER from {ser.info['settings'].get('classifier_init')}"
    return None, ""


def _core(g: Group, *also_ignored: str) -> dict[str, Any]:
    settings = g.info.get("settings", {})
    return {k: v for k, v in settings.items() if k not in (*SER_ONLY, *IGNORED, *also_ignored)}


def _by_seed(g: Group, metric: str) -> dict[int, float]:
    return {int(r.info.get("seed", i)): r.metrics.get(metric, math.nan) for i, r in enumerate(g.records)}


def pairs_summary(pairs: list[Pair]) -> list[dict[str, Any]]:
    """JSON-able pairs for `summary.json`."""
    return [{"ser": p.ser.label, "plain": p.plain.label, "note": p.note,
             "diffs": {m: d.to_dict() for m, d in p.diffs.items()}} for p in pairs]


def format_diff(d: PairedDiff) -> str:
    """`+3.21 [+0.50, +5.92] (n=3)`; without an interval for one seed."""
    if d.n == 0:
        return "-"
    if d.n == 1:
        return f"{d.mean:+.2f} (n=1)"
    return f"{d.mean:+.2f} [{d.low:+.2f}, {d.high:+.2f}] (n={d.n})"
