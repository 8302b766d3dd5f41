"""Renderings of grouped evaluations: the headline table (Rich and Markdown), `report.md` and the curve data.

Rows are groups (a configuration on a dataset), columns the headline metrics as "mean +- std" over the group's
seeds (a single run shows its value alone). The headline is: class-IL and task-IL final average accuracy, class-IL
forgetting, clean accuracy, PGD and FGSM accuracy at a reference budget (2/255 when evaluated, else the smallest),
the saliency branch's CC against its targets (`branch CC vs targets`: how well SER's branch learned what it was
given, not how good those targets are), the targets' CC against the data's ground truth where the data has it
(`targets CC vs GT`), where the classifier looks (Grad-CAM's share on the object, its CC with the target
maps), test throughput, and, for spurious-dataset groups, the drop in class-IL accuracy from the
clean dataset. A last `chance` row gives what guessing scores in each column it applies to: 100 / classes for
class-IL, clean and attacked accuracy, 100 / classes per task for task-IL, the object's share of the image for
Grad-CAM on object. A `maps` column after the run count names what made the saliency maps, shown when some group's were
not made by a predictor (a classical baseline of `ser precompute --method`, or the data's own). `report.md` adds
every metric, transposed (one row per metric), so nothing is hidden.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from rich.table import Table
from rich.text import Text

from ser_cli.metrics.robustness import ATTACKS
from ser_cli.plots.continual import RunCurves
from ser_cli.report.compare import Group, Stat, maps_method, targets_label
from ser_cli.report.pairs import Pair, format_diff
from ser_cli.report.provenance_checks import run_code, run_threads

FIXED_COLUMNS = {
    "class_il_final_avg_acc": "class-IL acc",
    "task_il_final_avg_acc": "task-IL acc",
    "class_il_forgetting": "class-IL forgetting",
    "clean_acc": "clean acc",
}
TAIL_COLUMNS = {"saliency_cc": "branch CC vs targets", "targets_gt_cc": "targets CC vs GT",
                "attention_on_object": "Grad-CAM on object", "attention_saliency_cc": "Grad-CAM CC",
                "test_images_per_second": "test img/s"}
CHANCE_LABEL = "chance"
DROP_COLUMN = "spurious drop"
MAPS_COLUMN = "maps"
TARGETS_COLUMN = "targets"
REFERENCE_EPS = "2"


def headline_columns(groups: list[Group]) -> dict[str, str]:
    """{metric key: column title} of the headline, restricted to metrics some group reports."""
    present = {k for g in groups for k, s in g.stats.items() if s.n}
    columns = {k: v for k, v in FIXED_COLUMNS.items() if k in present}
    for attack in ATTACKS:
        keys = sorted((k for k in present if k.startswith(f"{attack}_acc_eps_")), key=_eps_of)
        if keys:
            ref = f"{attack}_acc_eps_{REFERENCE_EPS}"
            key = ref if ref in keys else keys[0]
            columns[key] = f"{attack.upper()} acc eps {key.rsplit('_', 1)[1]}/255"
    columns.update({k: v for k, v in TAIL_COLUMNS.items() if k in present})
    return columns


def _eps_of(key: str) -> float:
    return float(key.rsplit("_", 1)[1])


def format_stat(stat: Stat | None, key: str) -> str:
    """"71.25 +- 1.30" (several runs), "71.25" (one), "-" (none); throughput without decimals."""
    if stat is None or stat.n == 0:
        return "-"
    digits = 0 if key == "test_images_per_second" else 2
    if stat.n == 1:
        return f"{stat.mean:.{digits}f}"
    return f"{stat.mean:.{digits}f} ± {stat.std:.{digits}f}"


def shows_targets(groups: list[Group]) -> bool:
    """The `targets` column (what made SER's training targets) is shown when some SER group recorded them."""
    return any(g.info.get("ser") and g.info.get("train_targets") for g in groups)


def shows_maps(groups: list[Group]) -> bool:
    """The `maps` column is shown when some group's maps were not made by a predictor."""
    return any(maps_method(g.info) != "model" for g in groups)


def table_rows(groups: list[Group], columns: dict[str, str]) -> list[list[str]]:
    """Cells of the headline table: group, runs, maps method (see `shows_maps`), one per column, spurious drop."""
    rows = []
    maps, targets = shows_maps(groups), shows_targets(groups)
    for g in groups:
        drop = g.spurious_drop.get("class_il_final_avg_acc")
        drop_cell = "-" if drop is None or not math.isfinite(drop) else f"{drop:+.2f}"
        rows.append([g.label, str(len(g.records)), *([targets_label(g.info)] if targets else []),
                     *([maps_method(g.info)] if maps else []),
                     *(format_stat(g.stats.get(k), k) for k in columns), drop_cell])
    return rows


def chance_row(groups: list[Group], columns: dict[str, str]) -> list[str] | None:
    """The `chance` row: what a uniform guess scores in each column it applies to ("-" elsewhere), or None when
    the groups disagree on the class split (the chance levels would differ between rows)."""
    splits = {(_setting(g, "n_tasks"), _setting(g, "classes_per_task")) for g in groups}
    if len(splits) != 1 or None in next(iter(splits)):
        return None
    n_tasks, per_task = next(iter(splits))
    every_class = 100.0 / (n_tasks * per_task)
    object_share = [g.stats["attention_on_object_chance"].mean for g in groups
                    if g.stats.get("attention_on_object_chance") and g.stats["attention_on_object_chance"].n]
    cells = []
    for key in columns:
        if key == "task_il_final_avg_acc":
            cells.append(f"{100.0 / per_task:.2f}")
        elif key in ("class_il_final_avg_acc", "clean_acc") or "_acc_eps_" in key:
            cells.append(f"{every_class:.2f}")
        elif key == "attention_on_object" and object_share:
            cells.append(f"{float(np.mean(object_share)):.2f}")
        else:
            cells.append("-")
    return [CHANCE_LABEL, "-", *(["-"] if shows_targets(groups) else []), *(["-"] if shows_maps(groups) else []),
            *cells, "-"]


def reading_guide(groups: list[Group]) -> list[str]:
    """Five lines to print under the table: what each column compares against, and what guessing scores."""
    splits = {(_setting(g, "n_tasks"), _setting(g, "classes_per_task")) for g in groups}
    n_tasks, per_task = next(iter(splits)) if len(splits) == 1 else (None, None)
    known = n_tasks is not None and per_task is not None
    every = f"all {n_tasks * per_task} classes, chance {100 / (n_tasks * per_task):.1f}" if known else "all classes"
    within = f"{per_task} classes, chance {100 / per_task:.1f}" if known else "its own classes"
    return [
        "How to read this table (accuracies in %, averaged over the tasks after the last one):",
        f"- class-IL acc: one prediction among {every}, no task label; task-IL acc: the task is given, "
        f"{within}.",
        "- class-IL forgetting: how far old tasks fell from their best (lower is better); clean / PGD / FGSM acc: "
        "the final model on clean and attacked test images.",
        "- branch CC vs targets: SER's saliency branch against the maps it was trained on (not their quality); "
        "targets CC vs GT: those maps against the data's ground truth.",
        "- Grad-CAM on object: the classifier's attention on the object (chance: the object's area); Grad-CAM CC: "
        "against the target maps. The chance row gives guessing levels.",
    ]


def _setting(g: Group, key: str) -> int | None:
    value = (g.info.get("settings") or {}).get(key)
    return value if isinstance(value, int) else None


def header(columns: dict[str, str], maps: bool = False, targets: bool = False) -> list[str]:
    return ["run", "n", *([TARGETS_COLUMN] if targets else []), *([MAPS_COLUMN] if maps else []),
            *columns.values(), DROP_COLUMN]


def rich_table(groups: list[Group], columns: dict[str, str]) -> Table:
    """The headline as a Rich table (for stdout)."""
    table = Table(title="ser compare (mean ± std over seeds; spurious drop = clean - spurious class-IL acc)")
    for i, name in enumerate(header(columns, shows_maps(groups), shows_targets(groups))):
        # a method's name stays whole; the number columns wrap their titles instead
        if name in (MAPS_COLUMN, TARGETS_COLUMN):
            table.add_column(name, justify="left", no_wrap=True)
        else:
            table.add_column(name, justify="left" if i == 0 else "right", overflow="fold")
    for row in table_rows(groups, columns):
        table.add_row(*(Text(cell) for cell in row))  # Text: "[spurious]" is a label, not Rich markup
    chance = chance_row(groups, columns)
    if chance is not None:
        table.add_section()
        table.add_row(*(Text(cell, style="dim") for cell in chance))
    return table


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table (pipes in cells escaped)."""
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def all_metrics_table(groups: list[Group]) -> str:
    """Every metric as a row, every group as a column (Markdown)."""
    keys = list(dict.fromkeys(k for g in groups for k in g.stats))
    rows = [[k, *(format_stat(g.stats.get(k), k) for g in groups)] for k in keys]
    return markdown_table(["metric", *(g.label for g in groups)], rows)


PAIR_COLUMNS = {"class_il_final_avg_acc": "class-IL acc", "task_il_final_avg_acc": "task-IL acc",
                "class_il_forgetting": "class-IL forgetting", "clean_acc": "clean acc"}


def pair_rows(pairs: list[Pair]) -> list[list[str]]:
    """Cells of the paired-differences table: SER group, plain group, one difference per metric, the note."""
    return [[p.ser.label, p.plain.label, *(format_diff(p.diffs[m]) if m in p.diffs else "-" for m in PAIR_COLUMNS),
             p.note] for p in pairs]


def pairs_table(pairs: list[Pair]) -> Table:
    """The paired differences as a Rich table (`ser compare --pairs`)."""
    table = Table(title="SER - plain, paired by seed: mean [95 % t-interval] (n seeds)")
    for name in ("SER", "plain", *PAIR_COLUMNS.values(), "pairing"):
        table.add_column(name, justify="left" if name in ("SER", "plain", "pairing") else "right")
    for row in pair_rows(pairs):
        table.add_row(*(Text(cell) for cell in row))  # Text: "[spurious]" is a label, not Rich markup
    return table


def pairs_markdown(pairs: list[Pair]) -> list[str]:
    if not pairs:
        return []
    return ["## SER - plain, paired by seed", "",
            "Per seed d = SER - plain (same seed: same data order and buffer draws); mean of d and its two-sided "
            "95 % Student-t interval over seeds, in percentage points. An interval that excludes 0 is a "
            "difference the seeds support; forgetting: negative = SER forgets less.", "",
            markdown_table(["SER", "plain", *PAIR_COLUMNS.values(), "pairing"], pair_rows(pairs)), ""]


def report_markdown(groups: list[Group], columns: dict[str, str], images: list[Path],
                    pairs: list[Pair] | None = None, warnings: list[str] | None = None) -> str:
    """The text of `report.md`: warnings, headline table, paired differences, groups and their runs, figures, every
    metric."""
    parts = ["# ser compare", "", *(f"**Warning:** {w}\n" for w in warnings or []),
             "Mean ± sample standard deviation over the runs of a group (one configuration on one dataset). "
             "*spurious drop*: class-IL final average accuracy on the clean dataset minus on the spurious one, "
             "same configuration, same test split (percentage points; positive = the spurious feature hurt).", "",
             markdown_table(header(columns, shows_maps(groups), shows_targets(groups)),
                            table_rows(groups, columns) + [r for r in [chance_row(groups, columns)] if r]), "",
             "*branch CC vs targets*: SER's saliency branch against the maps it was trained on (not their quality); "
             "*targets CC vs GT*: those maps against the data's ground-truth maps; *chance*: a uniform guess.", "",
             *pairs_markdown(pairs or []),
             "## Runs", ""]
    for g in groups:
        seeds = ", ".join(str(r.info.get("seed")) for r in g.records)
        parts.append(f"- **{g.label}**: config `{g.info['config_hash'][:12]}`, data "
                     f"`{g.info['data']['fingerprint'][:12]}`, maps {maps_method(g.info)}, SER targets "
                     f"{targets_label(g.info)}, trained by code {', '.join(sorted({run_code(r) for r in g.records}))}"
                     f" on {', '.join(sorted({run_threads(r) for r in g.records}))}, seeds {seeds}; "
                     + ", ".join(f"`{r.path}`" for r in g.records)
                     + (f"; clean partner: {g.clean_partner}" if g.clean_partner else ""))
    parts += ["", "## Figures", ""] + [f"![{p.stem}]({p.name})\n" for p in images]
    parts += ["## Every metric", "", all_metrics_table(groups), ""]
    return "\n".join(parts)


def group_curves(g: Group) -> RunCurves:
    """Mean and std over the group's runs of the accuracy and robustness curves (accuracy only if tasks agree),
    with the method and SER switch that style its lines and the chance levels."""
    curves = RunCurves(g.label, method=str(g.info.get("method") or ""), ser=bool(g.info.get("ser")))
    series = [r.avg_accuracy for r in g.records if r.avg_accuracy]
    if series and all(np.array_equal(s["task"], series[0]["task"]) for s in series):
        curves.tasks = series[0]["task"]
        for key in ("class_il", "task_il"):
            stacked = np.stack([s[key] for s in series])  # (runs, T)
            curves.accuracy[key] = (stacked.mean(0), _std(stacked))
    for attack in dict.fromkeys(a for r in g.records for a in r.robustness):
        tables = [r.robustness[attack] for r in g.records if attack in r.robustness]
        eps = sorted(set.intersection(*(set(t) for t in tables)))
        stacked = np.array([[t[e] for e in eps] for t in tables])  # (runs, E)
        curves.robustness[attack] = (np.array(eps), stacked.mean(0), _std(stacked))
    curves.chance = chance_curves(g, curves.tasks)
    return curves


def chance_curves(g: Group, tasks: np.ndarray) -> dict[str, np.ndarray]:
    """Chance levels (%) after each task 1..T: class-IL 100 / the classes its argmax ranges over (those seen so far,
    or all with `class_il_logits: all`), task-IL 100 / classes per task; `attacked`: 100 / the classes seen at the
    end (clean and attacked accuracy). {} when the run records no class split."""
    n_tasks, per_task = _setting(g, "n_tasks"), _setting(g, "classes_per_task")
    if n_tasks is None or per_task is None:
        return {}
    T = int(tasks.max()) if len(tasks) else n_tasks
    after = np.arange(1, T + 1)
    seen = after * per_task if g.info.get("class_il_logits", "seen") == "seen" else np.full(T, n_tasks * per_task)
    evaluated = g.info.get("tasks_evaluated") if isinstance(g.info.get("tasks_evaluated"), int) else n_tasks
    return {"class_il": 100.0 / seen, "task_il": np.full(T, 100.0 / per_task),
            "attacked": np.array([100.0 / (evaluated * per_task)])}


def _std(stacked: np.ndarray) -> np.ndarray:
    return stacked.std(0, ddof=1) if len(stacked) > 1 else np.zeros(stacked.shape[1])
