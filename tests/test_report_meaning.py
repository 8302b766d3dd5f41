"""Columns and figures that say what they mean: the branch-vs-targets column's title, the targets' CC against ground
truth (computed independently here), the chance row (100 / classes, 100 / classes per task, the object's area); one
hue per method (dashed with SER), chance lines, a robustness axis scaled to the data, a perceptual overlay map."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from matplotlib import colormaps

from ser_cli.config import PrecomputeConfig
from ser_cli.data.store import DataFile
from ser_cli.plots import continual
from ser_cli.plots.continual import RunCurves, robustness_top, run_styles
from ser_cli.plots.overlay import heat_overlay
from ser_cli.report.compare import group_evals, load_eval
from ser_cli.report.render import (
    CHANCE_LABEL,
    chance_curves,
    chance_row,
    group_curves,
    header,
    headline_columns,
    report_markdown,
    rich_table,
)
from stages import precompute
from stages.evaluate import targets_truth_cc
from tests.test_compare import CLEAN, _write_eval


def _cc_np(p: np.ndarray, q: np.ndarray) -> float:
    p, q = (p - p.mean()) / p.std(), (q - q.mean()) / q.std()
    return float((p * q).mean())


def test_targets_cc_against_ground_truth(tiny_synth: Path, tmp_path: Path) -> None:
    maps = tmp_path / "sr.h5"
    precompute.run(PrecomputeConfig(), tiny_synth, maps, method="spectral-residual", device="cpu")
    with h5py.File(maps) as m, h5py.File(tiny_synth) as d:
        expected = np.mean([_cc_np(a.astype(np.float64), b.astype(np.float64))
                            for a, b in zip(m["test"]["maps"][:], d["test"]["maps"][:], strict=True)])
    got = targets_truth_cc(DataFile(tiny_synth), maps, block=5)  # blocks that do not divide the 12 test images
    assert got["targets_gt_cc"] == pytest.approx(expected, abs=1e-5) and got["targets_gt_cc"] < 0.9
    assert targets_truth_cc(DataFile(tiny_synth), None) == {}  # no maps file: the targets are the data's own


def _evals(tmp_path: Path, n_tasks: int = 5, per_task: int = 4) -> list[Path]:
    folders = [_write_eval(tmp_path / "p", "a" * 64, "derpp", False, 0, CLEAN, False, 40.0, [90, 60, 40.0],
                           [50, 30, 10]),
               _write_eval(tmp_path / "s", "b" * 64, "derpp", True, 0, CLEAN, False, 50.0, [92, 70, 50.0],
                           [60, 40, 20])]
    for folder, share in zip(folders, (0.12, 0.14), strict=True):
        metrics = json.loads((folder / "metrics.json").read_text())
        metrics.update(attention_on_object=0.3, attention_on_object_chance=share, targets_gt_cc=0.61)
        (folder / "metrics.json").write_text(json.dumps(metrics))
        info = json.loads((folder / "run.json").read_text())
        info["settings"] = {"n_tasks": n_tasks, "classes_per_task": per_task}
        (folder / "run.json").write_text(json.dumps(info))
    return folders


def test_chance_row_gives_each_columns_guessing_level(tmp_path: Path) -> None:
    groups = group_evals([load_eval(p) for p in _evals(tmp_path)])
    columns = headline_columns(groups)
    head = header(columns)
    assert "branch CC vs targets" in head and "targets CC vs GT" in head and "saliency CC" not in head
    row = dict(zip(head, chance_row(groups, columns), strict=True))
    assert row["run"] == CHANCE_LABEL
    assert row["class-IL acc"] == "5.00" and row["clean acc"] == "5.00" and row["PGD acc eps 2/255"] == "5.00"
    assert row["task-IL acc"] == "25.00"
    assert row["Grad-CAM on object"] == "0.13"  # the object's mean share of the image over the groups
    assert row["class-IL forgetting"] == "-" and row["branch CC vs targets"] == "-"
    markdown = report_markdown(groups, columns, [])
    assert "| chance | - | 5.00 | 25.00 |" in markdown and "*branch CC vs targets*" in markdown
    assert rich_table(groups, columns).row_count == 3


def test_no_chance_row_when_the_splits_differ(tmp_path: Path) -> None:
    a, b = _evals(tmp_path)
    info = json.loads((b / "run.json").read_text())
    info["settings"] = {"n_tasks": 2, "classes_per_task": 10}
    (b / "run.json").write_text(json.dumps(info))
    groups = group_evals([load_eval(a), load_eval(b)])
    assert chance_row(groups, headline_columns(groups)) is None


def _capture(monkeypatch: pytest.MonkeyPatch) -> list:
    """The figures `ser_cli.plots.continual` would save, kept for inspection."""
    figures: list = []

    def keep(fig, path):
        figures.append(fig)
        return path

    monkeypatch.setattr(continual, "save_png", keep)
    return figures


def _curves(method: str, ser: bool, pgd: list[float]) -> RunCurves:
    tasks = np.array([1, 2, 3, 4, 5])
    return RunCurves(f"{method}{'+ser' if ser else ''}", tasks=tasks,
                     accuracy={"class_il": (np.linspace(80, 30, 5), np.zeros(5)),
                               "task_il": (np.linspace(90, 70, 5), np.zeros(5))},
                     robustness={"pgd": (np.array([0.0, 2.0, 8.0]), np.array(pgd), np.array([1.0, 0.5, 0.0]))},
                     method=method, ser=ser,
                     chance={"class_il": 100 / (tasks * 4), "task_il": np.full(5, 25.0), "attacked": np.array([5.0])})


def test_one_hue_per_method_solid_plain_dashed_ser() -> None:
    runs = [_curves("derpp", False, [20, 5, 1]), _curves("derpp", True, [22, 6, 1]),
            _curves("er_ace", False, [18, 4, 0]), _curves("er_ace", True, [23, 7, 2])]
    styles = run_styles(runs)
    assert [s["color"] for s in styles] == ["C0", "C0", "C1", "C1"]
    assert [s["linestyle"] for s in styles] == ["-", "--", "-", "--"]
    twin = run_styles([_curves("derpp", False, [1, 1, 1]), _curves("derpp", False, [1, 1, 1])])
    assert twin[0]["marker"] != twin[1]["marker"]  # e.g. a spurious-data twin of the same configuration


def test_robustness_axis_fits_the_data_with_chance_and_clean_marked(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    figures = _capture(monkeypatch)
    runs = [_curves("derpp", False, [20, 5, 1]), _curves("derpp", True, [22, 6, 1])]
    continual.plot_runs_robustness(tmp_path / "r.png", runs)
    ax = figures[0].axes[0]
    assert ax.get_ylim() == (0.0, robustness_top(23.0)) == (0.0, 30.0)  # 22 + std 1, 10 % headroom, to 5 points
    chance = [line for line in ax.get_lines() if line.get_label() == "chance"]
    assert len(chance) == 1 and set(chance[0].get_ydata()) == {5.0}
    assert ax.get_xticklabels()[0].get_text() == "0\n(clean)"
    plain, ser = (line for line in ax.get_lines() if line.get_label() in ("derpp", "derpp+ser"))
    assert plain.get_color() == ser.get_color() and (plain.get_linestyle(), ser.get_linestyle()) == ("-", "--")


def test_accuracy_figure_draws_the_chance_of_each_scenario(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    figures = _capture(monkeypatch)
    continual.plot_runs_accuracy(tmp_path / "a.png", [_curves("derpp", False, [1, 1, 1])])
    class_ax, task_ax = figures[0].axes[:2]
    (class_chance,) = [line for line in class_ax.get_lines() if line.get_label() == "chance"]
    assert np.allclose(class_chance.get_ydata(), [25.0, 12.5, 100 / 12, 6.25, 5.0])  # 100 / classes seen
    (task_chance,) = [line for line in task_ax.get_lines() if line.get_label() == "chance"]
    assert np.allclose(task_chance.get_ydata(), 25.0)


def test_chance_curves_of_a_group(tmp_path: Path) -> None:
    groups = group_evals([load_eval(p) for p in _evals(tmp_path, n_tasks=3, per_task=2)])
    chance = chance_curves(groups[0], np.array([1, 2, 3]))
    assert np.allclose(chance["class_il"], [50.0, 25.0, 100 / 6]) and np.allclose(chance["task_il"], 50.0)
    assert np.allclose(chance["attacked"], [100 / 6])
    assert group_curves(groups[1]).ser and group_curves(groups[1]).method == "derpp"


def test_overlays_use_a_perceptual_colour_map() -> None:
    image = np.zeros((2, 2, 3), np.uint8)
    grey = np.full((2, 2), 255, np.uint8)
    top = np.round(0.6 * np.array(colormaps["magma"](1.0)[:3]) * 255)  # MAX_ALPHA of magma's brightest colour
    assert np.array_equal(heat_overlay(image, grey)[0, 0], top.astype(np.uint8))
    assert continual.OVERLAY_CMAP == "magma"


def test_the_table_comes_with_five_lines_on_how_to_read_it(tmp_path: Path) -> None:
    from stages import compare as stage

    result = stage.run(_evals(tmp_path), tmp_path / "report")
    guide = result.guide
    assert len(guide) == 5 and guide[0].startswith("How to read this table")
    assert "all 20 classes, chance 5.0" in guide[1] and "4 classes, chance 25.0" in guide[1]
    assert "branch CC vs targets" in guide[3] and "ground truth" in guide[3]
    table = (tmp_path / "report" / "table.txt").read_text()
    assert table.count("How to read this table") == 1 and table.index("chance") < table.index("How to read")


def test_single_run_figures_draw_chance(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    figures = _capture(monkeypatch)
    chance = continual.chance_levels(3, 2)
    assert np.allclose(chance["class_il"], [50.0, 25.0, 100 / 6]) and np.allclose(chance["task_il"], 50.0)
    assert np.allclose(continual.chance_levels(3, 2, seen_logits=False)["class_il"], 100 / 6)
    continual.plot_avg_accuracy(tmp_path / "a.png", {"class_il": np.array([90.0, 50, 30]),
                                                     "task_il": np.array([90.0, 80, 70])}, chance)
    lines = {line.get_label(): line for line in figures[0].axes[0].get_lines()}
    assert np.allclose(lines["class-IL chance"].get_ydata(), chance["class_il"])
    rows = [{"attack": "pgd", "eps_255": e, "accuracy": a} for e, a in ((0.0, 12.0), (2.0, 3.0))]
    continual.plot_robustness(tmp_path / "r.png", rows, chance=100 / 6)
    ax = figures[1].axes[0]
    assert ax.get_ylim() == (0.0, 20.0)  # 16.7 (chance) is the highest line drawn
    assert [line.get_ydata()[0] for line in ax.get_lines() if line.get_label() == "chance"] == [100 / 6]
