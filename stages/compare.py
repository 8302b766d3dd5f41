"""Stage `compare`: several evaluation folders -> one report (`ser compare EVAL_A EVAL_B ... --out REPORT`).

Runs of the same configuration on the same dataset (several seeds) are grouped by config hash and summarised as
mean +- std (`ser_cli.report.compare`); a group trained on a spurious dataset gets the drop from its clean partner.
Writes `REPORT/summary.json`, `REPORT/report.md` (headline table, runs, figures, every metric), `REPORT/table.txt`,
`REPORT/accuracy_curves.png` and `REPORT/robustness_curves.png`, staged in `REPORT.partial/` and moved into `REPORT`
when complete; an existing `REPORT` is only replaced when it is an earlier `ser compare` report (of other
evaluations only with `--overwrite`), and files `ser` did not write are kept.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ser_cli.plots.continual import plot_runs_accuracy, plot_runs_robustness
from ser_cli.report.compare import Group, group_evals, load_eval, summary
from ser_cli.report.pairs import pair_groups, pairs_summary
from ser_cli.report.provenance_checks import group_provenance, mixing_warnings
from ser_cli.report.render import (
    group_curves,
    headline_columns,
    pairs_table,
    reading_guide,
    report_markdown,
    rich_table,
)
from ser_cli.runtime.atomic import write_json_atomic, write_text_atomic
from ser_cli.runtime.errors import UserError
from ser_cli.runtime.hashing import file_sha256
from ser_cli.runtime.output_folder import OutputFolder, check_disjoint, identity_hash, resolve_path
from ser_cli.runtime.output_lock import locks_outputs
from ser_cli.runtime.progress import log
from ser_cli.runtime.provenance import code_version, machine_facts


@dataclass
class CompareResult:
    """What the command shows: the report folder, the headline table and the summary."""

    out: Path
    table: Table
    summary: dict[str, Any]
    pairs: Table
    guide: list[str] = field(default_factory=list)  # how to read the table, printed under it


@locks_outputs("out", torchrun=False)
def run(evals: list[Path], out: Path, overwrite: bool = False) -> CompareResult:
    """Load, group and report `evals` into the folder `out` (see `OutputFolder` for what an existing one gets)."""
    _check_inputs(evals, out)
    folder = OutputFolder(out, "ser compare", _identity(evals), overwrite)
    state = folder.state()
    groups = group_evals([load_eval(p) for p in evals])
    columns = headline_columns(groups)
    result = summary(groups, list(columns))
    table = rich_table(groups, columns)
    pairs = pair_groups(groups)
    result["pairs"] = pairs_summary(pairs)
    result["warnings"] += mixing_warnings(groups, pairs)
    for group, summarised in zip(groups, result["groups"], strict=True):
        summarised["provenance"] = group_provenance(group)
    result["compared_by"] = {"code": code_version(), "machine": machine_facts()}
    for warning in result["warnings"]:
        log(f"[yellow]warning:[/yellow] {warning}")
    if state == "complete":
        log(f"{out}: already complete for these evaluations, nothing to do")
        return CompareResult(Path(out), table, result, pairs_table(pairs), reading_guide(groups))
    tmp = folder.start()
    try:
        images = _figures(groups, tmp)
        write_json_atomic(tmp / "summary.json", result)
        write_text_atomic(tmp / "report.md", report_markdown(groups, columns, images, pairs,
                                                             result["warnings"]))
        write_text_atomic(tmp / "table.txt", plain_text(table) + "\n".join(reading_guide(groups)) + "\n"
                          + (plain_text(pairs_table(pairs)) if pairs else ""))
    except BaseException:
        folder.abandon()
        raise
    return CompareResult(folder.commit(), table, result, pairs_table(pairs), reading_guide(groups))


def experiments_folder(out: Path) -> Path:
    """Where `--exps` puts the evaluations it reads out of DVC experiments: a fixed place per report folder (so a
    rerun on the same experiments finds the report complete), outside it (the report folder holds only what
    `ser compare` writes there) and outside the repository (nothing for git or DVC to pick up)."""
    key = hashlib.sha256(str(Path(out).resolve()).encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / "ser-compare-exps" / key
    shutil.rmtree(folder, ignore_errors=True)  # what is there now is the experiments as they are now
    return folder


def _identity(evals: list[Path]) -> str:
    """The evaluations' paths and the bytes of what the report reads from them."""
    parts = {}
    for p in evals:
        files = sorted(f for f in Path(p).rglob("*") if f.is_file() and f.suffix in (".json", ".csv"))
        parts[str(Path(p).resolve())] = {f.relative_to(p).as_posix(): file_sha256(f) for f in files}
    return identity_hash(parts)


def plain_text(table: Table) -> str:
    """The headline table as plain text (`make demo` prints it again when the pipeline is already up to date)."""
    console = Console(file=io.StringIO(), width=160, record=True, color_system=None)
    console.print(table)
    return console.export_text()


def _check_inputs(evals: list[Path], out: Path) -> None:
    if not evals:
        raise UserError("ser compare: give at least one evaluation folder (ser evaluate --out EVAL)")
    resolved = [resolve_path(f"EVAL#{i + 1}", Path(p)) for i, p in enumerate(evals)]
    for p, r in zip(evals, resolved, strict=True):
        if resolved.count(r) > 1:
            raise UserError(f"{p}: given more than once; each evaluation folder counts once")
    check_disjoint({"--out": Path(out)}, {f"EVAL#{i + 1}": Path(p) for i, p in enumerate(evals)})


def _figures(groups: list[Group], folder: Path) -> list[Path]:
    curves = [group_curves(g) for g in groups]
    images = []
    with_accuracy = [c for c in curves if {"class_il", "task_il"} <= set(c.accuracy)]
    if with_accuracy:
        images.append(plot_runs_accuracy(folder / "accuracy_curves.png", with_accuracy))
    with_robustness = [c for c in curves if c.robustness]
    if with_robustness:
        images.append(plot_runs_robustness(folder / "robustness_curves.png", with_robustness))
    return images
