"""The tables and figures of an evaluation folder (`ser evaluate`), from the stage's folded results.

`plots/avg_accuracy.csv`, `plots/accuracy_matrix.csv` and `plots/robustness.csv` (the DVC plot sources), the
accuracy-matrix heatmap, the average accuracy after each task, robust accuracy against epsilon
(`ser_cli.plots.continual`), and the two figures drawn on a class-stratified handful of test images: the saliency
overlay (the SER branch's map, or for a run without SER the input-gradient saliency of the true class, Simonyan et
al., ICLR-W 2014) and `gradcam.png` (`ser_cli.plots.gradcam`). Those two run the final model over their few images,
so this module, unlike the other `plots/` modules, takes the run itself; the stage only decides what is measured and
where it goes.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ser_cli.metrics.attribution import input_gradient_saliency, mass_inside
from ser_cli.metrics.robustness import RobustnessResult, stratified_subset
from ser_cli.metrics.saliency import cc
from ser_cli.plots.continual import plot_accuracy_matrix, plot_avg_accuracy, plot_robustness, plot_saliency_overlay
from ser_cli.plots.gradcam import plot_gradcam
from ser_cli.runs.attention import gradcam_of
from ser_cli.runs.final_test import EvalScope, EvaluableRun, TestLoader

N_OVERLAY = 8


@dataclass
class Overlay:
    """Images for the overlay figure: uint8 images, the model's maps, target maps (or None), captions."""

    images: np.ndarray
    maps: np.ndarray
    targets: np.ndarray | None
    titles: list[str]
    map_name: str


def overlay_of(model: EvaluableRun, scope: EvalScope, loader: TestLoader, seed: int) -> Overlay:
    """A class-stratified handful of test images with the saliency branch's map (or input-gradient saliency)."""
    rows = scope.rows[stratified_subset(scope.labels, N_OVERLAY, seed)]
    x01, labels, maps, _, _ = next(iter(TestLoader(loader.data, loader.maps_path, len(rows), loader.device)
                                        .batches(rows)))
    pred = model.saliency_map(x01) if model.settings.ser else None
    name = "SER saliency branch"
    if pred is None:
        pred, name = input_gradient_saliency(scope.logits_fn(model), x01, labels), "input gradient (no SER)"
    images = (x01 * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()  # (N, H, W, 3)
    titles = [model.class_names[int(y)] for y in labels.cpu()]
    targets = maps.cpu().numpy() if loader.has_targets else None
    return Overlay(images, pred.detach().float().cpu().numpy(), targets, titles, name)


def write_gradcam(path: Path, model: EvaluableRun, scope: EvalScope, loader: TestLoader, seed: int) -> None:
    """gradcam.png on the overlay's class-stratified images, each Grad-CAM captioned with its scores."""
    rows = scope.rows[stratified_subset(scope.labels, N_OVERLAY, seed)]
    x01, labels, maps, _, _ = next(iter(TestLoader(loader.data, loader.maps_path, len(rows), loader.device)
                                        .batches(rows)))
    cam = gradcam_of(model, scope, x01, labels)  # (N, H, W)
    masks = loader.data.masks("test", rows)  # (N, H, W) bool or None
    scores = [[] for _ in rows]
    if masks is not None:
        for i, v in enumerate(mass_inside(cam, torch.from_numpy(masks).to(cam.device)).tolist()):
            scores[i].append(f"on object {v:.2f}")
    if loader.has_targets:
        for i, v in enumerate(cc(cam, maps.float()).tolist()):
            scores[i].append(f"CC {v:.2f}")
    images = (x01 * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()  # (N, H, W, 3)
    plot_gradcam(path, images, cam.cpu().numpy(), [model.class_names[int(y)] for y in labels.cpu()],
                 maps.cpu().numpy() if loader.has_targets else None, masks, ["  ".join(s) for s in scores])


def write_tables(folder: Path, R: dict[str, np.ndarray], curves: dict[str, np.ndarray],
                  robustness: RobustnessResult) -> None:
    """plots/avg_accuracy.csv, plots/accuracy_matrix.csv, plots/robustness.csv (DVC plot sources)."""
    T = len(R["class_il"])
    done = [t for t in range(T) if np.isfinite(curves["class_il"][t])]  # every task, or the last one for `joint`
    _csv(folder / "plots" / "avg_accuracy.csv", ["task", "class_il", "task_il"],
         [[t + 1, curves["class_il"][t], curves["task_il"][t]] for t in done])
    _csv(folder / "plots" / "accuracy_matrix.csv", ["after_task", "task", "class_il", "task_il"],
         [[t + 1, k + 1, R["class_il"][t, k], R["task_il"][t, k]] for t in done for k in range(t + 1)])
    rows = robustness.rows()
    _csv(folder / "plots" / "robustness.csv", ["attack", "epsilon", "eps_255", "accuracy"],
         [[r["attack"], r["epsilon"], r["eps_255"], r["accuracy"]] for r in rows])


def _csv(path: Path, head: list[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(head)
        writer.writerows(rows)


def write_figures(folder: Path, R: dict[str, np.ndarray], curves: dict[str, np.ndarray],
                   robustness: RobustnessResult, overlay: Overlay, chance: dict[str, np.ndarray] | None = None,
                   attacked_chance: float | None = None) -> None:
    """The figures of `ser evaluate`, with chance lines when `chance` (`chance_levels`) and `attacked_chance` (%)
    are given."""
    plot_accuracy_matrix(folder / "accuracy_matrix.png", R)
    plot_avg_accuracy(folder / "avg_accuracy.png", curves, chance)
    if robustness.attacked:
        plot_robustness(folder / "robustness.png", robustness.rows(), attacked_chance)
    plot_saliency_overlay(folder / "saliency_overlay.png", overlay.images, overlay.maps, overlay.titles,
                          overlay.map_name, overlay.targets)
