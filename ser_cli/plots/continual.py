"""Figures of `ser evaluate` and `ser compare`: accuracy matrix, average accuracy, robustness, saliency overlays.

The accuracy-matrix heatmap and the average-accuracy-after-each-task curve are the figures of continual-learning
papers (Lopez-Paz & Ranzato, NeurIPS 2017; Mammoth); robust accuracy against epsilon is the usual adversarial
figure (Madry et al., ICLR 2018), with epsilon in 1/255 units; the overlay grid draws the saliency map over each
test image as SER's qualitative figures do (Bellitto et al., NeurIPS 2024). Multi-run figures show the mean over
seeds with a +-1 standard deviation band; each method keeps one hue, solid without SER and dashed with it, and a
grey dotted line marks chance (a uniform guess). Robustness axes are scaled to the data (robust accuracies near
the floor are not squeezed into a 0-100 axis), with epsilon 0 labelled as the clean accuracy. Saliency overlays
use a perceptual colour map (magma). Uses `matplotlib.figure.Figure` directly (no pyplot state, no GUI backend)
and writes through a temporary name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from ser_cli.plots.common import save_png

SCENARIOS = (("class_il", "class-IL"), ("task_il", "task-IL"))
OVERLAY_CMAP = "magma"  # perceptual and dark-to-bright: readable over SynthSal's saturated colours, unlike jet
CHANCE_STYLE = {"color": "0.45", "linestyle": ":", "linewidth": 1.2}


def _unit(m: np.ndarray) -> np.ndarray:
    """A map min-max scaled to [0, 1] so its shape shows whatever its offset (a constant map becomes 0)."""
    low, span = float(m.min()), float(m.max() - m.min())
    return (m - low) / span if span > 0 else np.zeros_like(m)


def plot_accuracy_matrix(path: Path, matrices: dict[str, np.ndarray]) -> Path:
    """Heatmaps of R[t][k] (percent), one panel per scenario, values written in the cells, unseen tasks blank.

    Args:
        path: Output PNG.
        matrices: {"class_il": (T, T), "task_il": (T, T)} with NaN for tasks not trained yet.
    """
    T = len(matrices["class_il"])
    side = 1.0 + 0.55 * T
    fig = Figure(figsize=(2 * side + 1.6, side + 0.9), dpi=110, layout="constrained")
    axes = fig.subplots(1, 2, squeeze=False)[0]
    for ax, (key, title) in zip(axes, SCENARIOS, strict=True):
        image = _heatmap(ax, np.asarray(matrices[key], dtype=float), title)
    axes[1].set_ylabel("")
    fig.colorbar(image, ax=list(axes), label="accuracy (%)", shrink=0.85)
    return save_png(fig, Path(path))


def _heatmap(ax: Axes, R: np.ndarray, title: str) -> AxesImage:
    T = len(R)
    image = ax.imshow(np.ma.masked_invalid(R), cmap="viridis", vmin=0, vmax=100)
    ax.set_facecolor("#eeeeee")  # tasks not trained yet
    for t in range(T):
        for k in range(T):
            if np.isfinite(R[t, k]):
                ax.text(k, t, f"{R[t, k]:.0f}", ha="center", va="center", fontsize=8,
                        color="black" if R[t, k] > 60 else "white")
    ticks = np.arange(T)
    ax.set_xticks(ticks, [str(k + 1) for k in ticks])
    ax.set_yticks(ticks, [str(t + 1) for t in ticks])
    ax.set_xlabel("evaluated on task")
    ax.set_ylabel("after training task")
    ax.set_title(title)
    return image


def plot_avg_accuracy(path: Path, curves: dict[str, np.ndarray], chance: dict[str, np.ndarray] | None = None) -> Path:
    """Average accuracy over the tasks seen so far after each task, class-IL and task-IL on one axis.

    Args:
        path: Output PNG.
        curves: {"class_il": (T,), "task_il": (T,)} in percent.
        chance: The same keys' chance levels after each task (`chance_levels`), drawn dotted in the lines' colours.
    """
    fig = Figure(figsize=(5.2, 3.6), dpi=110)
    ax = fig.subplots()
    for key, title in SCENARIOS:
        y = np.asarray(curves[key], dtype=float)
        x = np.arange(1, len(y) + 1)
        (line,) = ax.plot(x, y, marker="o", label=f"{title} (final {y[-1]:.1f})")
        if chance is not None and key in chance:
            ax.plot(x, chance[key][: len(x)], label=f"{title} chance",
                    **{**CHANCE_STYLE, "color": line.get_color()})
    _accuracy_axis(ax, len(curves["class_il"]), "average accuracy over seen tasks (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, Path(path))


def chance_levels(n_tasks: int, classes_per_task: int, seen_logits: bool = True) -> dict[str, np.ndarray]:
    """Chance (%) after each task 1..n_tasks: class-IL 100 / the classes its argmax ranges over (seen so far, or all),
    task-IL 100 / classes per task."""
    after = np.arange(1, n_tasks + 1)
    classes = after * classes_per_task if seen_logits else np.full(n_tasks, n_tasks * classes_per_task)
    return {"class_il": 100.0 / classes, "task_il": np.full(n_tasks, 100.0 / classes_per_task)}


def _accuracy_axis(ax: Axes, T: int, ylabel: str) -> None:
    ax.set_xticks(np.arange(1, T + 1))
    ax.set_xlabel("after training task")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)


def plot_robustness(path: Path, rows: list[dict[str, float | str]], chance: float | None = None) -> Path:
    """Accuracy against the L-inf budget (in 1/255), one line per attack; epsilon 0 is the clean accuracy.

    Args:
        path: Output PNG.
        rows: Long-format rows with keys attack, eps_255, accuracy (`RobustnessResult.rows()`).
        chance: Accuracy of a uniform guess (%), drawn as a dotted line; None: not drawn.
    """
    fig = Figure(figsize=(5.2, 3.6), dpi=110)
    ax = fig.subplots()
    for attack in dict.fromkeys(str(r["attack"]) for r in rows):
        pts = sorted((float(r["eps_255"]), float(r["accuracy"])) for r in rows if r["attack"] == attack)
        ax.plot(*zip(*pts, strict=True), marker="o", label=attack.upper())
    if chance is not None:
        ax.axhline(chance, label="chance", **CHANCE_STYLE)
    highest = max([float(r["accuracy"]) for r in rows] + ([chance] if chance is not None else []))
    _robustness_axis(ax, sorted({float(r["eps_255"]) for r in rows}), highest)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, Path(path))


def _robustness_axis(ax: Axes, eps_255: list[float], highest: float = 100.0) -> None:
    """Epsilon ticks with 0 labelled as the clean accuracy; y from 0 to a little above the highest value drawn."""
    ax.set_xticks(eps_255, ["0\n(clean)" if e == 0 else format(e, "g") for e in eps_255])
    ax.set_xlabel("epsilon (x 1/255, L-inf)")
    ax.set_ylabel("accuracy on attacked images (%)")
    ax.set_ylim(0, robustness_top(highest))
    ax.grid(alpha=0.3)


def robustness_top(highest: float) -> float:
    """The y-axis top for curves whose highest value (mean + std, chance included) is `highest`: 10 % headroom
    rounded up to 5 points, at most 100."""
    return float(min(100.0, 5.0 * np.ceil(max(highest, 1.0) * 1.1 / 5.0)))


def plot_saliency_overlay(path: Path, images: np.ndarray, maps: np.ndarray, titles: list[str], map_name: str,
                          targets: np.ndarray | None = None) -> Path:
    """A grid: test images, then the same images with the model's map overlaid (and the target map, if given).

    Args:
        path: Output PNG.
        images: uint8 (N, H, W, 3).
        maps: The model's maps (N, H, W), any scale (each shown min-max scaled).
        titles: One caption per image (its class).
        map_name: Row label of `maps`, e.g. "SER saliency branch" or "input gradient".
        targets: Target maps (N, H, W) for a third row, or None.
    """
    rows = [("image", None), (map_name, maps)] + ([("target map", targets)] if targets is not None else [])
    n, (h, w) = len(images), images.shape[1:3]
    fig = Figure(figsize=(n * 1.9 * w / max(h, w) + 0.8, len(rows) * 1.9 * h / max(h, w) + 0.5), dpi=110)
    axes = fig.subplots(len(rows), n, squeeze=False)
    for r, (label, overlay) in enumerate(rows):
        for i in range(n):
            axes[r, i].imshow(images[i])
            if overlay is not None:
                axes[r, i].imshow(_unit(overlay[i]), cmap=OVERLAY_CMAP, alpha=0.5, vmin=0, vmax=1)
            axes[r, i].set_xticks([])
            axes[r, i].set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=8)
    for i, title in enumerate(titles):
        axes[0, i].set_title(title, fontsize=8)
    fig.tight_layout()
    return save_png(fig, Path(path))


@dataclass
class RunCurves:
    """Mean and standard deviation over the seeds of one group, for the multi-run figures.

    Attributes:
        label: Legend entry.
        tasks: 1-based task numbers of the accuracy points (T,) (only the last task for a `joint` run).
        accuracy: {"class_il": (mean (T,), std (T,)), "task_il": ...}.
        robustness: {attack: (eps_255 (E,), mean (E,), std (E,))}, epsilon 0 = clean.
        method: The continual method (one hue per method); "" when unknown (then every run its own colour).
        ser: Whether SER is on (dashed line).
        chance: Chance levels in percent: {"class_il": (T,), "task_il": (T,)} after each task, "attacked": (1,).
    """

    label: str
    tasks: np.ndarray = field(default_factory=lambda: np.zeros(0))
    accuracy: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    robustness: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    method: str = ""
    ser: bool = False
    chance: dict[str, np.ndarray] = field(default_factory=dict)


# Beyond this many runs a figure's legend goes under the panels, and the runs cycle line styles as well as colours
# (matplotlib's default cycle repeats its 10 colours, so an experiment grid of 26 groups drew look-alike lines).
INLINE_LEGEND_RUNS = 8
LINE_STYLES = ("-", "--", ":", "-.")
LEGEND_COLUMNS, LEGEND_ROW_INCHES = 3, 0.2


def _run_style(i: int) -> dict[str, object]:
    """Colour and line style of the i-th run: matplotlib's default colours for the first 10 (small figures look as
    they always did), then tab20's colours dashed, dotted, dash-dotted."""
    if i < 10:
        return {"color": f"C{i}"}
    return {"color": colormaps["tab20"](i % 20), "linestyle": LINE_STYLES[1 + (i - 10) // 20 % 3]}


MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def run_styles(runs: list[RunCurves]) -> list[dict[str, object]]:
    """One style per run: a hue per method (in order of appearance), solid without SER and dashed with it, and
    another marker for each further run of the same method and switch (e.g. its spurious-data twin). Runs without a
    method fall back to `_run_style` (a colour each)."""
    if not all(run.method for run in runs):
        return [_run_style(i) for i in range(len(runs))]
    hues = list(dict.fromkeys(run.method for run in runs))
    seen: dict[tuple[str, bool], int] = {}
    styles = []
    for run in runs:
        k = hues.index(run.method)
        repeat = seen[(run.method, run.ser)] = seen.get((run.method, run.ser), -1) + 1
        styles.append({"color": f"C{k}" if k < 10 else colormaps["tab20"](k % 20),
                       "linestyle": "--" if run.ser else "-", "marker": MARKERS[repeat % len(MARKERS)]})
    return styles


def shared_chance(runs: list[RunCurves], key: str) -> np.ndarray | None:
    """The chance level `key` if every run that has one agrees on it (None otherwise: no single line to draw)."""
    levels = [run.chance[key] for run in runs if key in run.chance]
    if not levels or any(len(c) != len(levels[0]) or not np.allclose(c, levels[0]) for c in levels):
        return None
    return levels[0]


def _legend_rows(n_runs: int) -> int:
    """Rows of the legend under the panels (0: the legend sits inside a panel)."""
    return 0 if n_runs <= INLINE_LEGEND_RUNS else -(-n_runs // LEGEND_COLUMNS)


def _runs_figure(n_runs: int, n_panels: int) -> tuple[Figure, np.ndarray]:
    """A row of panels, taller when the legend of many runs goes under them."""
    fig = Figure(figsize=(5 * n_panels, 3.8 + LEGEND_ROW_INCHES * _legend_rows(n_runs)), dpi=110)
    return fig, fig.subplots(1, n_panels, squeeze=False)[0]


def _runs_legend(fig: Figure, axes: np.ndarray, n_runs: int, **inline: str) -> None:
    """The runs' legend: inside the first panel for a few runs, in 3 columns under the panels for many."""
    rows = _legend_rows(n_runs)
    if rows == 0:
        axes[-1 if inline else 0].legend(fontsize=7, **inline)  # placed (accuracy): the last panel, as before
        fig.tight_layout()
        return
    handles, labels = axes[0].get_legend_handles_labels()
    legend_height = LEGEND_ROW_INCHES * (rows + 1) / fig.get_figheight()
    fig.legend(handles, labels, loc="lower center", ncol=LEGEND_COLUMNS, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, legend_height, 1, 1))


def plot_runs_accuracy(path: Path, runs: list[RunCurves]) -> Path:
    """Average accuracy after each task of every run (group) on one figure: class-IL and task-IL panels."""
    fig, axes = _runs_figure(len(runs), 2)
    styles = run_styles(runs)
    for ax, (key, title) in zip(axes, SCENARIOS, strict=True):
        T = 1
        for run, style in zip(runs, styles, strict=True):
            mean, std = run.accuracy[key]
            (line,) = ax.plot(run.tasks, mean, label=run.label, **{"marker": "o", **style})
            ax.fill_between(run.tasks, mean - std, mean + std, alpha=0.2, color=line.get_color())
            T = max(T, int(run.tasks.max()))
        chance = shared_chance(runs, key)
        if chance is not None:
            ax.plot(np.arange(1, len(chance) + 1), chance, label="chance", **CHANCE_STYLE)
        _accuracy_axis(ax, T, f"{title} average accuracy (%)")
        ax.set_title(title)
    _runs_legend(fig, axes, len(runs), loc="lower left")
    return save_png(fig, Path(path))


def plot_runs_robustness(path: Path, runs: list[RunCurves]) -> Path:
    """Robust accuracy against epsilon of every run (group) on one figure, one panel per attack."""
    attacks = list(dict.fromkeys(a for run in runs for a in run.robustness))
    fig, axes = _runs_figure(len(runs), max(1, len(attacks)))
    styles = run_styles(runs)
    chance = shared_chance(runs, "attacked")
    for ax, attack in zip(axes, attacks, strict=False):
        eps_all: set[float] = set()
        highest = float(chance[0]) if chance is not None else 0.0
        for run, style in zip(runs, styles, strict=True):
            if attack in run.robustness:
                eps, mean, std = run.robustness[attack]
                (line,) = ax.plot(eps, mean, label=run.label, **{"marker": "o", **style})
                ax.fill_between(eps, mean - std, mean + std, alpha=0.2, color=line.get_color())
                eps_all.update(float(e) for e in eps)
                highest = max(highest, float(np.max(mean + std)))
        if chance is not None:
            ax.axhline(float(chance[0]), label="chance", **CHANCE_STYLE)
        _robustness_axis(ax, sorted(eps_all), highest)
        ax.set_title(attack.upper())
    _runs_legend(fig, axes, len(runs))
    return save_png(fig, Path(path))
