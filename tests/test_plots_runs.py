"""Multi-run figures of `ser compare` stay readable for an experiment grid: every run its own colour and line style,
and beyond a few runs the legend under the panels instead of over them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.colors import to_hex
from PIL import Image

from ser_cli.plots.continual import INLINE_LEGEND_RUNS, RunCurves, _run_style, plot_runs_robustness


def test_seventy_runs_get_seventy_distinct_styles() -> None:
    styles = {(to_hex(s["color"]), s.get("linestyle", "-")) for s in map(_run_style, range(70))}
    assert len(styles) == 70  # 10 default colours, then 20 tab20 colours x 3 line styles
    assert _run_style(3) == {"color": "C3"}  # the first ten keep matplotlib's default look


def _runs(n: int) -> list[RunCurves]:
    eps = np.array([0.0, 1.0, 2.0])
    return [RunCurves(f"run {i}", robustness={"pgd": (eps, np.array([30.0, 20.0, 10.0]) - i, np.zeros(3))})
            for i in range(n)]


def test_a_grid_s_legend_goes_under_the_panels(tmp_path: Path) -> None:
    few = Image.open(plot_runs_robustness(tmp_path / "few.png", _runs(INLINE_LEGEND_RUNS)))
    many = Image.open(plot_runs_robustness(tmp_path / "many.png", _runs(26)))
    assert many.width == few.width and many.height > few.height * 1.4  # 9 legend rows added below
    # the bottom band of the tall figure holds the legend: not blank
    band = np.asarray(many.convert("L"))[-many.height // 5:]
    assert (band < 128).mean() > 0.002
