"""What made each group of a comparison, and one-line warnings when a group or a SER - plain pair mixes it.

A mean over seeds, or a paired difference, compares like with like only when its runs share the code version, the
torch thread count (the same seed gives other numbers with another one), the saliency model and SER's target source.
Grouping already separates saliency models and target sources (`report.compare.EvalRecord.group_key`); code versions
and thread counts are not part of a configuration, so they are checked here, in every group and every pair.
Evaluations made before a fact was recorded count as `unknown` for it and are not warned about.
"""

from __future__ import annotations

from typing import Any

from ser_cli.report.compare import EvalRecord, Group, targets_label
from ser_cli.report.pairs import Pair
from ser_cli.runtime.provenance import code_label


def run_code(record: EvalRecord) -> str:
    """The code version that trained the run (`unknown` before it was recorded)."""
    return code_label(record.info.get("train_code"))


def run_threads(record: EvalRecord) -> str:
    """Device and torch thread count of the training (`unknown` before it was recorded)."""
    host = record.info.get("train_host") or {}
    return f"{host.get('device')}x{host.get('torch_threads')}" if host else "unknown"


def run_isa(record: EvalRecord) -> str:
    """The SIMD level of the CPU that trained the run (`unknown` before it was recorded)."""
    return str((record.info.get("train_machine") or {}).get("isa") or "unknown")


FACTS = {"code version": run_code, "device x threads": run_threads, "CPU ISA": run_isa}
# Threads are checked over the whole comparison by `report.compare.mixed_hosts` (one line for every mix).
CHECKED = ("code version", "CPU ISA")


def group_provenance(g: Group) -> dict[str, Any]:
    """Per group, for `summary.json` and `report.md`: each fact's distinct values, and the target source."""
    facts = {name: sorted({fact(r) for r in g.records}) for name, fact in FACTS.items()}
    return {**facts, "targets": targets_label(g.info),
            "saliency model": str(g.info.get("saliency_checkpoint_sha256") or "-")[:12]}


def mixing_warnings(groups: list[Group], pairs: list[Pair]) -> list[str]:
    """One line per group whose runs, and per pair whose two groups, differ in code version or CPU ISA (and, for
    pairs, in the saliency model both started from)."""
    warnings = [f"{g.label}: its runs mix {name}s ({', '.join(values)}); its mean is not over one setup"
                for g in groups for name, values in _mixed(g.records).items()]
    for p in pairs:
        mixed = _mixed(p.ser.records + p.plain.records)
        ser_sal, plain_sal = (p.ser.info.get("saliency_checkpoint_sha256"),
                              p.plain.info.get("saliency_checkpoint_sha256"))
        if ser_sal and plain_sal and ser_sal != plain_sal:
            mixed["saliency model"] = [ser_sal[:7], plain_sal[:7]]
        warnings += [f"{p.ser.label} - {p.plain.label}: the pair mixes {name}s ({', '.join(values)}); its "
                     "difference is not SER's alone" for name, values in mixed.items()]
    return warnings


def _mixed(records: list[EvalRecord]) -> dict[str, list[str]]:
    out = {}
    for name in CHECKED:
        fact = FACTS[name]
        values = sorted({fact(r) for r in records} - {"unknown"})
        if len(values) > 1:
            out[name] = values
    return out
