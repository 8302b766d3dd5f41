"""Stage `pretrain_saliency`: train the saliency predictor on a data file with maps (`ser pretrain-saliency`).

Step 1 of SER (Bellitto et al., NeurIPS 2024; method.md sections 1 and 3-4): a UNISAL-style `SaliencyNet` learns
the ground-truth maps of the file's train split, minus a held-out validation share chosen by the seed. On CPU
with the built-in benchmark (a few minutes on 2 cores) and on one GPU (bf16 autocast):

    ser data synth --set data.synth.purpose=pretrain --out data/pretrain.h5
    ser pretrain-saliency --data data/pretrain.h5 --out runs/saliency
    ser pretrain-saliency --data data/salicon.h5 --out runs/salicon --device cuda --set saliency.backbone=resnet18

Writes to `--out`: `model.pt` (weights, config, data fingerprint, params and metrics), `metrics.json` (held-out
KLD, CC, SIM, NSS, AUC-Judd of the model and of a centre-bias map), `predictions.png`, `train_log.csv`. While it
runs, `checkpoint.pt` (model, optimiser, epoch, step, RNG states) is rewritten atomically at every epoch end and
every `saliency.checkpoint_every` steps; rerunning the same command after an interruption (Ctrl-C, kill -9)
resumes from it, and it is deleted once the outputs are complete (a finished run retrains from scratch when rerun).
After the last epoch the BatchNorm statistics are re-estimated on `saliency.precise_bn_batches` training batches
with the final weights (precise BN); the per-epoch validation scores in `train_log.csv` use the running averages.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ser_cli import __version__
from ser_cli.config import SaliencyConfig
from ser_cli.data.dataset import SplitDataset
from ser_cli.data.store import DataFile
from ser_cli.metrics.saliency import cc
from ser_cli.models.checkpoint import file_sha256, save_saliency_checkpoint
from ser_cli.models.normalize import Normalizer
from ser_cli.models.saliency_net import SaliencyNet
from ser_cli.models.torchvision_backbones import load_torchvision_weights
from ser_cli.plots.saliency_grid import plot_saliency_grid
from ser_cli.runtime.atomic import write_json_atomic, write_text_atomic
from ser_cli.runtime.checkpoint import load_resumable, remove_checkpoint, save_checkpoint
from ser_cli.runtime.clock import TrainingClock
from ser_cli.runtime.device import resolve_device
from ser_cli.runtime.errors import UserError
from ser_cli.runtime.output_folder import check_disjoint
from ser_cli.runtime.progress import log, progress_bar
from ser_cli.runtime.rng import capture_rng_state, restore_rng_state
from ser_cli.runtime.seeding import seed_everything
from ser_cli.saliency.encoder_init import load_classifier_encoder
from ser_cli.saliency.saliency_trainer import (
    SaliencyTrainer,
    center_bias_predictor,
    epoch_lrs,
    evaluate_maps,
    holdout_split,
    make_loader,
    net_predictor,
)

CHECKPOINT = "checkpoint.pt"
RESUME_KEYS = ("trainer", "rng", "elapsed")  # besides "identity"
METRICS = ("kld", "cc", "sim", "nss", "auc_judd")
GRID_IMAGES = 6
INFO_EVERY = 5  # progress-bar postfix refresh, in steps (each refresh is a host sync)
# Settings that may change between an interrupted run and its resume without changing what is computed.
RESUMABLE_KEYS = {"epochs", "checkpoint_every", "workers", "precise_bn_batches"}
# Keys added after runs were made, left out of identities and model.pt at this value (what those runs did), so an
# older run's checkpoint still resumes and a one-process model.pt holds the same metadata as before.
LATER_KEYS = {"backbone_weights": None}
# Fault injection for the resume tests: SIGKILL this process after N optimiser steps (a real kill -9).
LOG_FIELDS = ("epoch", "loss", "train_cc", "val_kld", "val_cc", "lr_decoder", "seconds")


@dataclass(frozen=True)
class PretrainResult:
    """What a run produced."""

    model: Path
    metrics: dict[str, float]
    files: list[Path]


def run(cfg: SaliencyConfig, data: Path, out: Path, device_name: str = "auto", restart: bool = False) -> PretrainResult:
    """Train (or resume), evaluate against the centre bias and write the outputs to `out`."""
    data, out = Path(data), Path(out)
    check_disjoint({"--out": out}, {"--data": data, "--init-from": cfg.init_from,
                                    "saliency.backbone_weights": cfg.backbone_weights})
    device = resolve_device(device_name)
    info = _check_data(data, cfg)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    identity = {"params": params_dump(cfg, RESUMABLE_KEYS), "data_fingerprint": info.fingerprint}
    saved = load_resumable(out / CHECKPOINT, identity, RESUME_KEYS, restart)
    net = _build_net(cfg, fresh=saved is None)
    net = net.to(device, memory_format=torch.channels_last)
    normalize = Normalizer(device, torch.channels_last)
    train_rows, val_rows = holdout_split(info.splits["train"].size, cfg.val_fraction, cfg.seed)
    dataset = SplitDataset(data, "train", with_fixations=info.splits["train"].n_fixations > 0)
    trainer = SaliencyTrainer(net, cfg, device, normalize, dataset, train_rows)
    clock = TrainingClock(_resume(trainer, saved, out / CHECKPOINT))
    val_loader = make_loader(dataset, val_rows, cfg.batch_size, cfg.workers)
    out.mkdir(parents=True, exist_ok=True)  # only now: a refused run leaves no empty folder behind
    try:
        _train(trainer, val_loader, out, identity, clock)
        return _finish(trainer, info, val_loader, val_rows, out, clock)
    finally:
        dataset.close()


def params_dump(cfg: SaliencyConfig, exclude: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """The parameters as recorded in identities and model.pt: `LATER_KEYS` at their old value left out."""
    later = {k for k, v in LATER_KEYS.items() if getattr(cfg, k) == v}
    return cfg.model_dump(mode="json", exclude=set(exclude) | later)


def _check_data(data: Path, cfg: SaliencyConfig) -> DataFile:
    info = DataFile(data)
    train = info.splits["train"]
    if not train.has_maps:
        raise UserError(f"{data}: the train split has no saliency maps; pretrain-saliency needs fixation data "
                        "(ser data synth --set data.synth.purpose=pretrain, or ser data import salicon|mit1003)")
    if cfg.w_nss > 0 and train.n_fixations == 0:
        raise UserError(f"saliency.w_nss={cfg.w_nss}: {data} has no fixation points in its train split; "
                        "set saliency.w_nss=0")
    return info


def _build_net(cfg: SaliencyConfig, fresh: bool) -> SaliencyNet:
    """The seeded network; a fresh run loads `init_from` or the torchvision `backbone_weights` into its encoder (a
    resumed one gets its checkpoint)."""
    seed_everything(cfg.seed)
    net = SaliencyNet(cfg.backbone, cfg.n_gaussians)
    if fresh and cfg.init_from:
        n = load_classifier_encoder(net.encoder, Path(cfg.init_from))
        log(f"encoder initialised from {cfg.init_from} ({n} tensors)")
    if fresh and cfg.backbone_weights:
        n = load_torchvision_weights(net.encoder, Path(cfg.backbone_weights), "saliency.backbone_weights")
        log(f"encoder initialised from torchvision weights {cfg.backbone_weights} ({n} tensors)")
    return net


def _resume(trainer: SaliencyTrainer, saved: dict[str, Any] | None, path: Path) -> float:
    """Restore an interrupted run; returns the seconds it had trained."""
    if saved is None:
        return 0.0
    trainer.load_state_dict(saved["trainer"])
    restore_rng_state(saved["rng"])
    log(f"resuming from {path}: epoch {trainer.epoch + 1}, step {trainer.step}/{trainer.steps_per_epoch}")
    return float(saved["elapsed"])


def _save(trainer: SaliencyTrainer, out: Path, identity: dict[str, Any], clock: TrainingClock) -> None:
    save_checkpoint(out / CHECKPOINT, {"trainer": trainer.state_dict(), "rng": capture_rng_state(),
                                       "identity": identity, "elapsed": clock.total()})


def _train(trainer: SaliencyTrainer, val_loader: torch.utils.data.DataLoader, out: Path, identity: dict[str, Any],
           clock: TrainingClock) -> None:
    """Epochs until `cfg.epochs`, checkpointing every N steps and at each epoch end."""
    cfg, every = trainer.cfg, trainer.cfg.checkpoint_every
    with progress_bar() as bar:
        while trainer.epoch < cfg.epochs:
            task = bar.add_task(f"epoch {trainer.epoch + 1}/{cfg.epochs}", total=trainer.steps_per_epoch,
                                completed=trainer.step, info="")
            for r in trainer.train_epoch():
                last = r.step == trainer.steps_per_epoch
                info = f"loss {r.loss.item():.3f} cc {r.cc.item():.3f}" if r.step % INFO_EVERY == 0 or last else None
                bar.update(task, advance=1, **({"info": info} if info else {}))
                if every and r.step % every == 0 and not last:
                    _save(trainer, out, identity, clock)
            _end_epoch(trainer, val_loader, clock)
            bar.update(task, info=f"loss {trainer.log[-1]['loss']:.3f} val cc {trainer.log[-1]['val_cc']:.3f}")
            _write_log(out / "train_log.csv", trainer.log)
            _save(trainer, out, identity, clock)


def _end_epoch(trainer: SaliencyTrainer, val_loader: torch.utils.data.DataLoader, clock: TrainingClock) -> None:
    loss, train_cc = trainer.epoch_means()
    val = evaluate_maps(net_predictor(trainer.net, trainer.cfg.precision, trainer.device), val_loader,
                        trainer.normalize, trainer.device)
    lr = epoch_lrs(trainer.cfg, trainer.epoch)["decoder"]
    trainer.end_epoch({"epoch": trainer.epoch + 1, "loss": loss, "train_cc": train_cc, "val_kld": val["kld"],
                       "val_cc": val["cc"], "lr_decoder": lr, "seconds": clock.total()})


def _write_log(path: Path, rows: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()} for row in rows)
    write_text_atomic(path, buf.getvalue())


def _finish(trainer: SaliencyTrainer, info: DataFile, val_loader: torch.utils.data.DataLoader,
            val_rows: np.ndarray, out: Path, clock: TrainingClock) -> PretrainResult:
    """Precise BN, held-out metrics of the model and the centre bias, the figure, `model.pt`; drop the checkpoint."""
    trainer.precise_bn(trainer.cfg.precise_bn_batches)
    seconds = clock.total()
    metrics = _metrics(trainer, info, val_loader)
    metrics.update(train_seconds=seconds, epochs=trainer.epoch, train_images=len(trainer.train_rows),
                   val_images=len(val_rows))
    grid = _write_predictions(out / "predictions.png", trainer, val_rows[:GRID_IMAGES])
    write_json_atomic(out / "metrics.json", metrics)
    cfg = trainer.cfg
    meta = {"params": params_dump(cfg), "metrics": metrics, "data": str(info.path),
            "val_rows": val_rows.tolist(), "ser_version": __version__,
            "init_from_sha256": file_sha256(Path(cfg.init_from)) if cfg.init_from else None}
    if cfg.backbone_weights:  # only then: model.pt of other runs keeps the metadata it always had
        meta["backbone_weights_sha256"] = file_sha256(Path(cfg.backbone_weights))
    save_saliency_checkpoint(out / "model.pt", trainer.net, info.fingerprint, meta)
    remove_checkpoint(out / CHECKPOINT)
    files = [out / "model.pt", out / "metrics.json", grid, out / "train_log.csv"]
    return PretrainResult(model=out / "model.pt", metrics=metrics, files=files)


def _metrics(trainer: SaliencyTrainer, info: DataFile, val_loader: torch.utils.data.DataLoader) -> dict[str, float]:
    net = net_predictor(trainer.net, trainer.cfg.precision, trainer.device)
    bias = center_bias_predictor(info.height, info.width, trainer.device)
    model = evaluate_maps(net, val_loader, trainer.normalize, trainer.device)
    baseline = evaluate_maps(bias, val_loader, trainer.normalize, trainer.device)
    nan = float("nan")
    return {**{k: model.get(k, nan) for k in METRICS}, **{f"center_bias_{k}": baseline.get(k, nan) for k in METRICS}}


def _write_predictions(path: Path, trainer: SaliencyTrainer, rows: np.ndarray) -> Path:
    """The grid for the first held-out images: image, ground truth, prediction (with its CC)."""
    items = [trainer.dataset[int(r)] for r in rows]
    images = torch.stack([it[0] for it in items])  # (N, 3, H, W) uint8
    targets = torch.stack([it[1] for it in items])  # (N, H, W)
    preds = net_predictor(trainer.net, trainer.cfg.precision, trainer.device)(trainer.normalize(images))
    scores = cc(preds, targets.to(trainer.device)).tolist()
    return plot_saliency_grid(path, images.permute(0, 2, 3, 1).numpy(), targets.numpy(), preds.cpu().numpy(),
                              scores)
