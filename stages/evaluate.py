"""Stage `evaluate`: metrics, robustness, saliency quality and figures of a trained run (`ser evaluate`).

From a run of `ser train` (anything with the `EvaluableRun` interface of `ser_cli.runs.run_io.LoadedRun`):

- continual-learning metrics from its accuracy matrices, class-IL and task-IL (`ser_cli.metrics.continual`;
  method.md section 5): final average accuracy, average after each task, anytime average, forgetting, BWT;
- one pass of the final model over the test images of every task trained so far: class-IL / task-IL accuracy
  (`test_*`, a check against the matrix's last row), the saliency branch's KLD / CC / SIM (+ NSS and AUC-Judd where
  the data file has fixation points) against the test maps (SER runs only), and the model's test throughput;
- where the final model looks, over the same test images: Grad-CAM of the true class's class-IL logit at the
  classifier's last stage, through the run's own `logits` (`ser_cli.runs.attention`): `attention_on_object`
  (share of its mass inside the object, for data files with object masks) and `attention_saliency_cc` (its CC with
  the target maps), and `gradcam.png` (image, Grad-CAM, target map per row);
- adversarial accuracy for every (attack, epsilon) of `evaluate` on a fixed class-stratified subset of those test
  images, end to end through `run.logits` (`ser_cli.metrics.robustness`);
- figures: accuracy-matrix heatmap, average accuracy after each task, robust accuracy against epsilon, and test
  images with the saliency branch's map overlaid (for a run without SER: the input-gradient saliency of the true
  class, |d logit_y / d x| maximised over colour channels, Simonyan et al., ICLR-W 2014), written with the CSV
  tables by `ser_cli.plots.evaluation`.

Everything is staged in `OUT.partial/` and moved into `OUT` when complete (`ser_cli.runtime.output_folder`):
`metrics.json` (flat numbers), `run.json` (the run's identity, for `ser compare`), `plots/*.csv` (for DVC) and the PNGs.

On K processes, `torchrun --nproc_per_node=K -m -- ser_cli evaluate --run RUN ...` (gloo on CPU, nccl with one GPU
per process; the `--` stops torchrun's parser from taking `--run` for an abbreviation of its `--run-path`) deals the
batches of the test pass, the Grad-CAM pass and the attacks round-robin over the ranks: the same batches
as one process, each image attacked from its own seeded start. Rank 0 gathers the per-batch results, folds them in
batch order and alone writes `OUT`: the metrics equal one process's exactly (measured rates aside).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress

from ser_cli.config import EvaluateConfig
from ser_cli.data.maps import MapsFile
from ser_cli.data.store import DataFile
from ser_cli.metrics.continual import continual_metrics, trained_matrices
from ser_cli.metrics.headline import evaluation_headline, write_headline
from ser_cli.metrics.robustness import (
    AttackSettings,
    RobustnessResult,
    attack_hits,
    check_attacks,
    check_epsilons,
    robustness_result,
    stratified_subset,
)
from ser_cli.plots.continual import chance_levels
from ser_cli.plots.evaluation import overlay_of, write_figures, write_gradcam, write_tables
from ser_cli.runs.attention import AttentionSums, attention_batches, merge_attention, summarise_attention
from ser_cli.runs.final_test import (
    EvalPass,
    EvalScope,
    EvaluableRun,
    TestLoader,
    check_same_data,
    eval_pass_batches,
    merge_passes,
    summarise_test_pass,
)
from ser_cli.runtime import distributed
from ser_cli.runtime.atomic import write_json_atomic
from ser_cli.runtime.device import host_facts
from ser_cli.runtime.errors import UserError
from ser_cli.runtime.hashing import file_sha256
from ser_cli.runtime.output_folder import OutputFolder, check_disjoint, identity_hash
from ser_cli.runtime.output_lock import locks_outputs
from ser_cli.runtime.progress import log, progress_bar, set_quiet
from ser_cli.runtime.provenance import code_version, machine_facts


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


@locks_outputs("out")
def run(cfg: EvaluateConfig, model: EvaluableRun, data_path: Path, out: Path, maps_path: Path | None = None,
        device: torch.device | str = "cpu", source: dict[str, Any] | None = None,
        overwrite: bool = False) -> EvalResult | None:
    """Evaluate `model` on the test split of `data_path` and write the evaluation folder `out`. None on ranks > 0.

    Args:
        cfg: The `evaluate` section (epsilons, attacks, PGD steps, batch size, subset size, class-IL logits, seed).
        model: The trained run.
        data_path: Its data file (checked by fingerprint).
        out: The evaluation folder; an existing one is only replaced when it is an earlier evaluation (of another
            run or settings only with `overwrite`), and only the files that evaluation wrote are replaced.
        maps_path: Saliency targets (`ser precompute`); None uses the data file's own maps, if any.
        device: Where the model lives (under torchrun on CUDA: this rank's GPU, `distributed.rank_device`).
        source: Extra provenance for `run.json` (e.g. {"run_dir": ...}).
        overwrite: Replace a finished evaluation of another run or other settings.
    """
    device, rank = torch.device(device), distributed.detect()
    run_dir = Path(source["run_dir"]) if source and source.get("run_dir") else None
    check_disjoint({"--out": out}, {"--run": run_dir, "--data": data_path, "--maps": maps_path})
    data = DataFile(data_path)
    check_same_data(model, data)
    maps = check_maps(maps_path, data)
    attacks, epsilons = check_attacks(cfg.attacks), check_epsilons(cfg.epsilons)
    if not rank.is_main:
        set_quiet(True)  # rank 0 shows progress and status lines
    folder = OutputFolder(out, "ser evaluate", _output_identity(cfg, model, data, maps, run_dir), overwrite)
    if folder.state() == "complete":  # every rank reads the same folder and agrees (nothing writes it meanwhile)
        log(f"{out}: already complete for this run, data and settings, nothing to do")
        return EvalResult(Path(out), json.loads((Path(out) / "metrics.json").read_text())) if rank.is_main else None
    R = trained_matrices(model.accuracy)
    distributed.init(device)
    try:
        return _evaluate_rank(folder, cfg, model, data, maps_path, R, attacks, epsilons, device, source, rank)
    finally:
        distributed.shutdown()


def _evaluate_rank(folder: OutputFolder, cfg: EvaluateConfig, model: EvaluableRun, data: DataFile,
                   maps_path: Path | None, R: dict[str, np.ndarray], attacks: list[str], epsilons: list[float],
                   device: torch.device, source: dict[str, Any] | None,
                   rank: distributed.DistInfo) -> EvalResult | None:
    """This rank's share of the work; rank 0 also stages, writes and commits the folder."""
    # Staged before the work: an output folder we cannot write fails at once, not after the attacks.
    tmp = folder.start() if rank.is_main else None
    try:
        metrics = _evaluate_into(tmp, cfg, model, data, maps_path, R, attacks, epsilons, device, source, rank)
    except BaseException:
        if rank.is_main:
            folder.abandon()
        raise
    return EvalResult(folder.commit(), metrics) if rank.is_main else None


def _evaluate_into(tmp: Path | None, cfg: EvaluateConfig, model: EvaluableRun, data: DataFile,
                   maps_path: Path | None, R: dict[str, np.ndarray], attacks: list[str], epsilons: list[float],
                   device: torch.device, source: dict[str, Any] | None,
                   rank: distributed.DistInfo) -> dict[str, float] | None:
    """The evaluation's work, its files written (by rank 0) into the staging folder `tmp`; returns the flat
    metrics on rank 0, None on the other ranks."""
    scope = EvalScope.of(model.settings, data, len(R["class_il"]), cfg.class_il_logits)
    loader = TestLoader(data, maps_path, cfg.batch_size, device)
    mine = scope.rows[distributed.rank_positions(len(scope.rows), cfg.batch_size, rank)]
    with progress_bar() as bar:
        task = bar.add_task(_task_name("evaluate test set", rank), total=len(mine), info="")
        test = eval_pass_batches(model, scope, loader, mine, on_batch=lambda n: bar.advance(task, n))
        attention = _attention(model, scope, loader, mine, bar, rank)
        hits = _robustness(model, scope, loader, cfg, attacks, epsilons, bar, rank)
    gathered = distributed.gather_to_main((test, attention, hits))
    if gathered is None:
        return None
    return _write_outputs(tmp, cfg, model, data, maps_path, R, scope, loader, source,
                          *_fold(gathered, scope, attacks, epsilons))


def targets_truth_cc(data: DataFile, maps_path: Path | None, block: int = 64) -> dict[str, float]:
    """`targets_gt_cc`: the mean CC of the target maps (the maps file) against the data file's own maps (SynthSal:
    the ground truth) over the test split, so a report can tell good targets from a branch that copies poor ones;
    {} without a maps file (the targets are the data's own maps) or without maps in the data."""
    if maps_path is None or not data.has_maps:
        return {}
    import h5py

    from ser_cli.metrics.saliency import cc

    maps, values = MapsFile(maps_path), []
    with h5py.File(data.path, "r", locking=False) as h5:
        for start in range(0, maps.sizes["test"], block):
            targets = torch.from_numpy(maps.read("test", start, start + block)).float()  # (b, H, W) uint8 -> float
            truth = torch.from_numpy(h5["test"]["maps"][start : start + block]).float()  # (b, H, W)
            values.append(cc(targets, truth).double())
    return {"targets_gt_cc": float(torch.cat(values).mean())} if values else {}


def _task_name(name: str, rank: distributed.DistInfo) -> str:
    return name + (f" (rank 0 of {rank.world_size})" if rank.is_distributed else "")


Shares = list[tuple[list[EvalPass], list[AttentionSums], tuple[np.ndarray, int]]]


def _fold(gathered: Shares, scope: EvalScope, attacks: list[str],
          epsilons: list[float]) -> tuple[EvalPass, AttentionSums, RobustnessResult]:
    """Every rank's per-batch results back in batch order and folded as one process folds them; attack hits summed
    (integers: any order)."""
    test = merge_passes(distributed.interleave_batches([g[0] for g in gathered]), scope.n_tasks)
    attention = merge_attention(distributed.interleave_batches([g[1] for g in gathered]))
    hits = sum((g[2][0] for g in gathered), np.zeros_like(gathered[0][2][0]))
    return test, attention, robustness_result(attacks, epsilons, hits, sum(g[2][1] for g in gathered))


def _write_outputs(tmp: Path, cfg: EvaluateConfig, model: EvaluableRun, data: DataFile, maps_path: Path | None,
                   R: dict[str, np.ndarray], scope: EvalScope, loader: TestLoader, source: dict[str, Any] | None,
                   test: EvalPass, attention: AttentionSums, robustness: RobustnessResult) -> dict[str, float]:
    """The metrics from the folded results; metrics.json, run.json, the CSV tables and the figures (rank 0)."""
    metrics, curves = continual_metrics(R)
    metrics.update(summarise_test_pass(test, scope))
    metrics.update(summarise_attention(attention))
    metrics.update(robustness.flat())
    metrics["attack_images"] = robustness.n_images
    metrics.update(targets_truth_cc(data, maps_path))
    (tmp / "plots").mkdir()
    write_tables(tmp, R, curves, robustness)
    chance = chance_levels(len(R["class_il"]), scope.classes_per_task, model.settings.class_il_logits == "seen")
    write_figures(tmp, R, curves, robustness, overlay_of(model, scope, loader, cfg.seed), chance,
                  100.0 / scope.n_logits)  # attacks: the argmax over the classes evaluated
    write_gradcam(tmp / "gradcam.png", model, scope, loader, cfg.seed)
    write_json_atomic(tmp / "metrics.json", metrics)
    write_headline(tmp / "metrics.json", evaluation_headline(metrics))  # what `dvc metrics show` prints
    write_json_atomic(tmp / "run.json", _identity(model, data, maps_path, scope, cfg, source, loader))
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


def _attention(model: EvaluableRun, scope: EvalScope, loader: TestLoader, rows: np.ndarray, bar: Progress,
               rank: distributed.DistInfo) -> list[AttentionSums]:
    """Grad-CAM over this rank's test images (one forward and a short backward per batch: cheap on CPU)."""
    task = bar.add_task(_task_name("Grad-CAM", rank), total=len(rows), info="")
    return attention_batches(model, scope, loader, rows, on_batch=lambda n: bar.advance(task, n))


def _robustness(model: EvaluableRun, scope: EvalScope, loader: TestLoader, cfg: EvaluateConfig, attacks: list[str],
                epsilons: list[float], bar: Progress, rank: distributed.DistInfo) -> tuple[np.ndarray, int]:
    """Hit counts of this rank's batches of the attacked subset; each image's PGD start is seeded by its test row."""
    rows = scope.rows[stratified_subset(scope.labels, cfg.attack_images, cfg.seed)]
    rows = rows[distributed.rank_positions(len(rows), cfg.batch_size, rank)]
    task = bar.add_task(_task_name("adversarial attacks", rank), total=len(rows),
                        info=f"{len(attacks)}x{len(epsilons)} budgets")
    batches = ((x01, labels, batch_rows) for x01, labels, _, _, batch_rows in loader.batches(rows))
    return attack_hits(scope.logits_fn(model), batches, attacks, epsilons,
                       AttackSettings(cfg.pgd_steps, cfg.pgd_step_factor), seed=cfg.seed,
                       on_batch=lambda n: bar.advance(task, n))


def _identity(model: EvaluableRun, data: DataFile, maps_path: Path | None, scope: EvalScope, cfg: EvaluateConfig,
              source: dict[str, Any] | None, loader: TestLoader) -> dict[str, Any]:
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
        "code": code_version(),
        "machine": machine_facts(),
        "host": host_facts(loader.device),
        **(source or {}),
    }
