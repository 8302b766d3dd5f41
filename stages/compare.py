"""Stage `compare`: several evaluation folders -> one report (`ser compare EVAL_A EVAL_B ... --out REPORT`).

Runs of the same configuration on the same dataset (several seeds) are grouped by config hash and summarised as
mean +- std (`ser_cli.report.compare`); a group trained on a spurious dataset gets the drop from its clean partner.
Writes `REPORT/summary.json`, `REPORT/report.md` (headline table, runs, figures, every metric), `REPORT/table.txt`,
`REPORT/accuracy_curves.png` and `REPORT/robustness_curves.png`, all into `REPORT.partial/` renamed when complete.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ser_cli.plots.continual import plot_runs_accuracy, plot_runs_robustness
from ser_cli.report.compare import Group, group_evals, load_eval, summary
from ser_cli.report.render import group_curves, headline_columns, report_markdown, rich_table
from ser_cli.runtime.atomic import write_json_atomic, write_text_atomic
from ser_cli.runtime.errors import UserError


@dataclass
class CompareResult:
    """What the command shows: the report folder, the headline table and the summary."""

    out: Path
    table: Table
    summary: dict[str, Any]


def run(evals: list[Path], out: Path) -> CompareResult:
    """Load, group and report `evals` into the folder `out` (replaced if it exists)."""
    _check_inputs(evals, out)
    groups = group_evals([load_eval(p) for p in evals])
    columns = headline_columns(groups)
    result = summary(groups, list(columns))
    tmp = Path(f"{out}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    images = _figures(groups, tmp)
    write_json_atomic(tmp / "summary.json", result)
    write_text_atomic(tmp / "report.md", report_markdown(groups, columns, images))
    table = rich_table(groups, columns)
    write_text_atomic(tmp / "table.txt", plain_text(table))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return CompareResult(Path(out), table, result)


def plain_text(table: Table) -> str:
    """The headline table as plain text (`make demo` prints it again when the pipeline is already up to date)."""
    console = Console(file=io.StringIO(), width=160, record=True, color_system=None)
    console.print(table)
    return console.export_text()


def _check_inputs(evals: list[Path], out: Path) -> None:
    if not evals:
        raise UserError("ser compare: give at least one evaluation folder (ser evaluate --out EVAL)")
    resolved = [Path(p).resolve() for p in evals]
    for p, r in zip(evals, resolved, strict=True):
        if resolved.count(r) > 1:
            raise UserError(f"{p}: given more than once; each evaluation folder counts once")
    if Path(out).resolve() in resolved:
        raise UserError(f"--out {out}: is one of the evaluation folders; choose another name, e.g. reports/compare")
    if Path(out).exists() and not Path(out).is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")


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
