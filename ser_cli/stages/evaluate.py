"""Stage `evaluate`: metrics, robustness, saliency quality and figures of a trained run (`ser evaluate`).

From a run of `ser train` (anything with the `EvaluableRun` interface of `ser_cli.continual.run_io.LoadedRun`):

- continual-learning metrics from its accuracy matrices, class-IL and task-IL (`ser_cli.metrics.continual`;
  method.md section 5): final average accuracy, average after each task, anytime average, forgetting, BWT;
- one pass of the final model over the test images of every task trained so far: class-IL / task-IL accuracy
  (`test_*`, a check against the matrix's last row), the saliency branch's KLD / CC / SIM (+ NSS and AUC-Judd where
  the data file has fixation points) against the test maps (SER runs only), and the model's test throughput;
- where the final model looks, over the same test images: Grad-CAM of the true class's class-IL logit at the
  classifier's last stage, through the run's own `logits` (`ser_cli.continual.attention`): `attention_on_object`
  (share of its mass inside the object, for data files with object masks) and `attention_saliency_cc` (its CC with
  the target maps), and `gradcam.png` (image, Grad-CAM, target map per row);
- adversarial accuracy for every (attack, epsilon) of `evaluate` on a fixed class-stratified subset of those test
  images, end to end through `run.logits` (`ser_cli.metrics.robustness`);
- figures: accuracy-matrix heatmap, average accuracy after each task, robust accuracy against epsilon, and test
  images with the saliency branch's map overlaid (for a run without SER: the input-gradient saliency of the true
  class, |d logit_y / d x| maximised over colour channels, Simonyan et al., ICLR-W 2014).

Everything is staged in `OUT.partial/` and moved into `OUT` when complete (`ser_cli.runtime.output_folder`):
`metrics.json` (flat numbers), `run.json` (the run's identity, for `ser compare`), `plots/*.csv` (for DVC) and the PNGs.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress

from ser_cli.config import EvaluateConfig
from ser_cli.continual.attention import AttentionSums, gradcam_of, run_attention_pass, summarise_attention
from ser_cli.continual.final_test import (
    EvalScope,
    EvaluableRun,
    TestLoader,
    check_same_data,
    run_test_pass,
    summarise_test_pass,
)
from ser_cli.data.maps import MapsFile
from ser_cli.data.store import DataFile
from ser_cli.metrics.attribution import input_gradient_saliency, mass_inside
from ser_cli.metrics.continual import continual_metrics, trained_matrices
from ser_cli.metrics.robustness import (
    AttackSettings,
    RobustnessResult,
    check_attacks,
    check_epsilons,
    robust_accuracy,
    stratified_subset,
)
from ser_cli.metrics.saliency import cc
from ser_cli.plots.continual import plot_accuracy_matrix, plot_avg_accuracy, plot_robustness, plot_saliency_overlay
from ser_cli.plots.gradcam import plot_gradcam
from ser_cli.runtime.atomic import write_json_atomic
from ser_cli.runtime.errors import UserError
from ser_cli.runtime.hashing import file_sha256
from ser_cli.runtime.output_folder import OutputFolder, check_disjoint, identity_hash
from ser_cli.runtime.progress import log, progress_bar

N_OVERLAY = 8


@dataclass
class EvalResult:
    """The evaluation folder and its flat metrics."""

    out: Path
    metrics: dict[str, float]


def check_run_dir(run_dir: Path) -> None:
    """UserError unless `run_dir` is a folder holding a trained model (`model.pt`)."""
    if not Path(run_dir).is_dir():
        raise UserError(f"--run {run_dir}: no such folder; give the --out folder of `ser train`")
    if not (Path(run_dir) / "model.pt").is_file():
        raise UserError(f"--run {run_dir}: has no model.pt; not a finished `ser train` run (or it is still running)")


def check_maps(maps_path: Path | None, data: DataFile) -> MapsFile | None:
    """The maps file, checked against the data file (one-line UserError when it was made for another)."""
    if maps_path is None:
        return None
    maps = MapsFile(maps_path)
    maps.check_matches(data)
    return maps


def run(cfg: EvaluateConfig, model: EvaluableRun, data_path: Path, out: Path, maps_path: Path | None = None,
        device: torch.device | str = "cpu", source: dict[str, Any] | None = None,
        overwrite: bool = False) -> EvalResult:
    """Evaluate `model` on the test split of `data_path` and write the evaluation folder `out`.

    Args:
        cfg: The `evaluate` section (epsilons, attacks, PGD steps, batch size, subset size, class-IL logits, seed).
        model: The trained run.
        data_path: Its data file (checked by fingerprint).
        out: The evaluation folder; an existing one is only replaced when it is an earlier evaluation (of another
            run or settings only with `overwrite`), and only the files that evaluation wrote are replaced.
        maps_path: Saliency targets (`ser precompute`); None uses the data file's own maps, if any.
        device: Where the model lives.
        source: Extra provenance for `run.json` (e.g. {"run_dir": ...}).
        overwrite: Replace a finished evaluation of another run or other settings.
    """
    device = torch.device(device)
    run_dir = Path(source["run_dir"]) if source and source.get("run_dir") else None
    check_disjoint({"--out": out}, {"--run": run_dir, "--data": data_path, "--maps": maps_path})
    data = DataFile(data_path)
    check_same_data(model, data)
    maps = check_maps(maps_path, data)
    attacks, epsilons = check_attacks(cfg.attacks), check_epsilons(cfg.epsilons)
    folder = OutputFolder(out, "ser evaluate", _output_identity(cfg, model, data, maps, run_dir), overwrite)
    if folder.state() == "complete":
        log(f"{out}: already complete for this run, data and settings, nothing to do")
        return EvalResult(Path(out), json.loads((Path(out) / "metrics.json").read_text()))
    R = trained_matrices(model.accuracy)
    tmp = folder.start()  # before the work: an output folder we cannot write fails at once, not after the attacks
    try:
        metrics = _evaluate_into(tmp, cfg, model, data, maps_path, R, attacks, epsilons, device, source)
    except BaseException:
        folder.abandon()
        raise
    return EvalResult(folder.commit(), metrics)


def _evaluate_into(tmp: Path, cfg: EvaluateConfig, model: EvaluableRun, data: DataFile, maps_path: Path | None,
                   R: dict[str, np.ndarray], attacks: list[str], epsilons: list[float], device: torch.device,
                   source: dict[str, Any] | None) -> dict[str, float]:
    """The evaluation's work, its files written into the staging folder `tmp`; returns the flat metrics."""
    scope = EvalScope.of(model.settings, data, len(R["class_il"]), cfg.class_il_logits)
    metrics, curves = continual_metrics(R)
    loader = TestLoader(data, maps_path, cfg.batch_size, device)
    with progress_bar() as bar:
        task = bar.add_task("evaluate test set", total=len(scope.rows), info="")
        test = run_test_pass(model, scope, loader, on_batch=lambda n: bar.advance(task, n))
        attention = _attention(model, scope, loader, bar)
        robustness = _robustness(model, scope, loader, cfg, attacks, epsilons, bar)
    metrics.update(summarise_test_pass(test, scope))
    metrics.update(summarise_attention(attention))
    metrics.update(robustness.flat())
    metrics["attack_images"] = robustness.n_images
    (tmp / "plots").mkdir()
    _write_tables(tmp, R, curves, robustness)
    _write_figures(tmp, R, curves, robustness, _overlay(model, scope, loader, cfg.seed))
    _write_gradcam(tmp / "gradcam.png", model, scope, loader, cfg.seed)
    write_json_atomic(tmp / "metrics.json", metrics)
    write_json_atomic(tmp / "run.json", _identity(model, data, maps_path, scope, cfg, source))
    return metrics


def _output_identity(cfg: EvaluateConfig, model: EvaluableRun, data: DataFile, maps: MapsFile | None,
                     run_dir: Path | None) -> str:
    """What an evaluation depends on: settings, the run's bytes (or its identity), the data and the maps."""
    model_file = run_dir / "model.pt" if run_dir else None
    return identity_hash({
        "evaluate": cfg.model_dump(mode="json"),
        "run": file_sha256(model_file) if model_file and model_file.is_file() else model.config_hash,
        "seed": model.settings.seed,
        "accuracy": {k: np.asarray(v, dtype=float).tolist() for k, v in model.accuracy.items()},
        "data": data.fingerprint,
        "maps": [str(maps.path.resolve()), maps.source] if maps else None,
    })


def _attention(model: EvaluableRun, scope: EvalScope, loader: TestLoader, bar: Progress) -> AttentionSums:
    """Grad-CAM over every test image in scope (one forward and a short backward per batch: cheap on CPU)."""
    task = bar.add_task("Grad-CAM", total=len(scope.rows), info="")
    return run_attention_pass(model, scope, loader, scope.rows, on_batch=lambda n: bar.advance(task, n))


def _robustness(model: EvaluableRun, scope: EvalScope, loader: TestLoader, cfg: EvaluateConfig, attacks: list[str],
                epsilons: list[float], bar: Progress) -> RobustnessResult:
    rows = scope.rows[stratified_subset(scope.labels, cfg.attack_images, cfg.seed)]
    task = bar.add_task("adversarial attacks", total=len(rows), info=f"{len(attacks)}x{len(epsilons)} budgets")
    batches = ((x01, labels) for x01, labels, *_ in loader.batches(rows))
    return robust_accuracy(scope.logits_fn(model), batches, attacks, epsilons,
                           AttackSettings(cfg.pgd_steps, cfg.pgd_step_factor), seed=cfg.seed,
                           on_batch=lambda n: bar.advance(task, n))


@dataclass
class Overlay:
    """Images for the overlay figure: uint8 images, the model's maps, target maps (or None), captions."""

    images: np.ndarray
    maps: np.ndarray
    targets: np.ndarray | None
    titles: list[str]
    map_name: str


def _overlay(model: EvaluableRun, scope: EvalScope, loader: TestLoader, seed: int) -> Overlay:
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


def _write_gradcam(path: Path, model: EvaluableRun, scope: EvalScope, loader: TestLoader, seed: int) -> None:
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


def _write_tables(folder: Path, R: dict[str, np.ndarray], curves: dict[str, np.ndarray],
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


def _write_figures(folder: Path, R: dict[str, np.ndarray], curves: dict[str, np.ndarray],
                   robustness: RobustnessResult, overlay: Overlay) -> None:
    plot_accuracy_matrix(folder / "accuracy_matrix.png", R)
    plot_avg_accuracy(folder / "avg_accuracy.png", curves)
    if robustness.attacked:
        plot_robustness(folder / "robustness.png", robustness.rows())
    plot_saliency_overlay(folder / "saliency_overlay.png", overlay.images, overlay.maps, overlay.titles,
                          overlay.map_name, overlay.targets)


def _identity(model: EvaluableRun, data: DataFile, maps_path: Path | None, scope: EvalScope, cfg: EvaluateConfig,
              source: dict[str, Any] | None) -> dict[str, Any]:
    settings = model.settings
    return {
        "config_hash": model.config_hash,
        "method": settings.method,
        "ser": settings.ser,
        "seed": settings.seed,
        "label": settings.method + ("+ser" if settings.ser else ""),
        "settings": settings.to_dict(),
        "data": {"path": str(data.path), "fingerprint": data.fingerprint,
                 "test_fingerprint": data.split_fingerprint("test"), "spurious": data.spurious},
        "maps": str(maps_path) if maps_path else None,
        "maps_method": MapsFile(maps_path).method if maps_path else None,
        "saliency_target": "maps file" if maps_path else ("data file maps" if data.has_maps else None),
        "tasks_evaluated": scope.n_tasks,
        "class_il_logits": cfg.class_il_logits,
        "evaluate": cfg.model_dump(mode="json"),
        **(source or {}),
    }
