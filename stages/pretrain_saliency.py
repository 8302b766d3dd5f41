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

On K processes, `torchrun --nproc_per_node=K -m ser_cli pretrain-saliency ...` (gloo on CPU, nccl with one GPU per
process) trains with DistributedDataParallel: `saliency.batch_size` images per process and step, K times as many
per step in all; `saliency.sync_bn=true` takes BatchNorm statistics over all K batches, so the run follows one
process with batch K * batch_size (to float rounding; dropout masks are drawn per process). Each rank validates a
share of the held-out images and the scores are summed over ranks. Rank 0 alone writes the outputs and
`checkpoint.pt`, which also holds every rank's RNG state; resuming needs the same K (another K is refused).
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
from ser_cli.metrics.headline import SALIENCY, headline, write_headline
from ser_cli.metrics.saliency import SCORE_NAMES, cc
from ser_cli.models.normalize import Normalizer
from ser_cli.models.saliency_net import SaliencyNet
from ser_cli.models.torchvision_backbones import load_torchvision_weights
from ser_cli.plots.saliency_grid import plot_saliency_grid
from ser_cli.runs.model_input import KEY as INPUT_KEY
from ser_cli.runs.model_input import input_record
from ser_cli.runs.saliency_file import KIND as SALIENCY_KIND
from ser_cli.runs.saliency_file import file_sha256, save_saliency_checkpoint
from ser_cli.runtime import distributed
from ser_cli.runtime.atomic import write_json_atomic, write_text_atomic
from ser_cli.runtime.checkpoint import load_checkpoint, load_resumable, remove_checkpoint, save_checkpoint
from ser_cli.runtime.clock import TrainingClock
from ser_cli.runtime.device import resolve_device
from ser_cli.runtime.errors import UserError
from ser_cli.runtime.output_folder import check_disjoint, check_owned_folder, has_log_header, mark_owned_folder
from ser_cli.runtime.output_lock import locks_outputs
from ser_cli.runtime.progress import log, progress_bar, set_quiet
from ser_cli.runtime.rng import capture_rng_state, restore_rng_state
from ser_cli.runtime.seeding import derive_seed, seed_everything
from ser_cli.runtime.sync_batchnorm import convert_sync_batchnorm
from ser_cli.runtime.torch_file import read_torch_file
from ser_cli.saliency.encoder_init import load_classifier_encoder
from ser_cli.saliency.saliency_trainer import (
    Reduce,
    SaliencyTrainer,
    center_bias_predictor,
    epoch_lrs,
    evaluate_maps,
    holdout_split,
    make_loader,
    net_predictor,
)

CHECKPOINT = "checkpoint.pt"
COMMAND = "ser pretrain-saliency"
OUTPUTS = ("model.pt", "metrics.json", "headline.json", "predictions.png", "train_log.csv")  # besides checkpoint.pt*
RESUME_KEYS = ("trainer", "rng", "elapsed")  # besides "identity"
METRICS = SCORE_NAMES  # metrics.json: each for the model and for the centre-bias baseline
GRID_IMAGES = 6
INFO_EVERY = 5  # progress-bar postfix refresh, in steps (each refresh is a host sync)
# Settings that may change between an interrupted run and its resume without changing what is computed.
RESUMABLE_KEYS = {"epochs", "checkpoint_every", "workers", "precise_bn_batches"}
# Keys added after runs were made, left out of identities and model.pt at this value (what those runs did), so an
# older run's checkpoint still resumes and a one-process model.pt holds the same metadata as before.
LATER_KEYS = {"sync_bn": False, "backbone_weights": None}
RANK_STREAM = 4  # derive_seed stream of each rank's dropout generator under torchrun
# Fault injection for the resume tests: SIGKILL this process after N optimiser steps (a real kill -9).
LOG_FIELDS = ("epoch", "loss", "train_cc", "val_kld", "val_cc", "lr_decoder", "seconds")


@dataclass(frozen=True)
class PretrainResult:
    """What a run produced."""

    model: Path
    metrics: dict[str, float]
    files: list[Path]


@locks_outputs("out")
def run(cfg: SaliencyConfig, data: Path, out: Path, device_name: str = "auto",
        restart: bool = False) -> PretrainResult | None:
    """Train (or resume), evaluate against the centre bias and write the outputs to `out`. None on ranks > 0."""
    data, out = Path(data), Path(out)
    check_disjoint({"--out": out}, {"--data": data, "--init-from": cfg.init_from,
                                    "saliency.backbone_weights": cfg.backbone_weights})
    rank = distributed.detect()
    device = distributed.rank_device(resolve_device(device_name), rank)
    info = _check_data(data, cfg)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    check_owned_folder(out, COMMAND, _legacy_folder)  # --overwrite or not, never into a folder of user files
    if not rank.is_main:
        set_quiet(True)  # rank 0 shows progress and status lines
    distributed.init(device)
    try:
        return _run_rank(cfg, data, out, device, restart, info, rank)
    finally:
        distributed.shutdown()


def _run_rank(cfg: SaliencyConfig, data: Path, out: Path, device: torch.device, restart: bool, info: DataFile,
              rank: distributed.DistInfo) -> PretrainResult | None:
    identity = {"params": params_dump(cfg, RESUMABLE_KEYS), "data_fingerprint": info.fingerprint}
    saved = _load_saved(out / CHECKPOINT, identity, restart, rank, device)
    net = _build_net(cfg, fresh=saved is None, rank=rank)
    net = net.to(device, memory_format=torch.channels_last)
    normalize = Normalizer(device, torch.channels_last)
    train_rows, val_rows = holdout_split(info.splits["train"].size, cfg.val_fraction, cfg.seed)
    dataset = SplitDataset(data, "train", with_fixations=info.splits["train"].n_fixations > 0)
    trainer = SaliencyTrainer(net, cfg, device, normalize, dataset, train_rows, rank)
    clock = TrainingClock(_resume(trainer, saved, out / CHECKPOINT))
    val_share = val_rows[distributed.rank_positions(len(val_rows), cfg.batch_size, rank)]  # whole batches
    val_loader = make_loader(dataset, val_share, cfg.batch_size, cfg.workers)
    if rank.is_main:
        mark_owned_folder(out, COMMAND)  # only now: a refused run leaves no empty folder behind
    try:
        _train(trainer, val_loader, out, identity, clock)
        return _finish(trainer, info, val_loader, val_rows, out, clock)
    finally:
        dataset.close()


def _legacy_folder(out: Path) -> bool:
    """A folder this command wrote before folders carried a manifest: only its file names, and its own `model.pt`
    or an interrupted run's checkpoint."""
    names = [p.name for p in out.rglob("*") if not p.is_dir()]
    if not all(name in OUTPUTS or name.startswith(CHECKPOINT) for name in names):
        return False
    if CHECKPOINT in names or has_log_header(out / "train_log.csv", ",".join(LOG_FIELDS)):  # DVC leaves the log
        return True
    try:
        payload = read_torch_file(out / "model.pt")
    except UserError:  # unreadable or missing: not a model of ours
        return False
    return isinstance(payload, dict) and payload.get("kind") == SALIENCY_KIND


def params_dump(cfg: SaliencyConfig, exclude: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """The parameters as recorded in identities and model.pt: `LATER_KEYS` at their old value left out."""
    later = {k for k, v in LATER_KEYS.items() if getattr(cfg, k) == v}
    return cfg.model_dump(mode="json", exclude=set(exclude) | later)


def _load_saved(path: Path, identity: dict[str, Any], restart: bool, rank: distributed.DistInfo,
                device: torch.device) -> dict[str, Any] | None:
    """The interrupted run's checkpoint. Rank 0 decides (it discards it for --restart, sets aside a torn file,
    refuses other settings or another K); the other ranks then read what it left."""
    saved = load_resumable(path, identity, RESUME_KEYS, restart) if rank.is_main else None
    distributed.barrier(device)
    if not rank.is_main:
        saved = load_checkpoint(path, ("identity", *RESUME_KEYS))
    if saved is not None and int(saved.get("world_size", 1)) != rank.world_size:
        k = int(saved.get("world_size", 1))
        raise UserError(f"{path}: left by an interrupted run on {k} process(es), now {rank.world_size}; resume "
                        f"with the same number ({'torchrun --nproc_per_node=' + str(k) if k > 1 else 'plain ser'}), "
                        "or pass --restart to start over")
    return saved


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


def _build_net(cfg: SaliencyConfig, fresh: bool, rank: distributed.DistInfo) -> SaliencyNet:
    """The seeded network; a fresh run loads `init_from` or the torchvision `backbone_weights` into its encoder (a
    resumed one gets its checkpoint).

    Every rank builds the same weights; then, under torchrun, each rank's torch generator is reseeded by its rank, so
    the ranks draw different dropout masks, and BatchNorm becomes synchronised with `sync_bn`.
    """
    seed_everything(cfg.seed)
    net = SaliencyNet(cfg.backbone, cfg.n_gaussians)
    if fresh and cfg.init_from:
        n = load_classifier_encoder(net.encoder, Path(cfg.init_from))
        log(f"encoder initialised from {cfg.init_from} ({n} tensors)")
    if fresh and cfg.backbone_weights:
        n = load_torchvision_weights(net.encoder, Path(cfg.backbone_weights), "saliency.backbone_weights")
        log(f"encoder initialised from torchvision weights {cfg.backbone_weights} ({n} tensors)")
    if rank.is_distributed:
        torch.manual_seed(derive_seed(cfg.seed, RANK_STREAM, rank.rank))  # dropout's generator
        if cfg.sync_bn:
            convert_sync_batchnorm(net)
    return net


def _resume(trainer: SaliencyTrainer, saved: dict[str, Any] | None, path: Path) -> float:
    """Restore an interrupted run (this rank's RNG state and epoch sums); returns the seconds it had trained."""
    if saved is None:
        return 0.0
    r = trainer.info.rank
    own = saved["ranks"][r - 1] if r > 0 else {"rng": saved["rng"], "sums": saved["trainer"]["sums"]}
    trainer.load_state_dict({**saved["trainer"], "sums": own["sums"]})
    restore_rng_state(own["rng"])
    log(f"resuming from {path}: epoch {trainer.epoch + 1}, step {trainer.step}/{trainer.steps_per_epoch}")
    return float(saved["elapsed"])


def _save(trainer: SaliencyTrainer, out: Path, identity: dict[str, Any], clock: TrainingClock) -> None:
    """Every rank's RNG state and epoch sums go to rank 0, which writes them with the shared state in one file (one
    atomic rename: a kill never leaves ranks' states of different steps)."""
    ranks = distributed.gather_to_main({"rng": capture_rng_state(), "sums": trainer.state_dict()["sums"]})
    if ranks is None:
        return
    save_checkpoint(out / CHECKPOINT, {"trainer": trainer.state_dict(), "rng": ranks[0]["rng"], "ranks": ranks[1:],
                                       "world_size": len(ranks), "identity": identity, "elapsed": clock.total()})


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
            if trainer.info.is_main:
                _write_log(out / "train_log.csv", trainer.log)
            _save(trainer, out, identity, clock)


def _end_epoch(trainer: SaliencyTrainer, val_loader: torch.utils.data.DataLoader, clock: TrainingClock) -> None:
    loss, train_cc = trainer.epoch_means()
    val = evaluate_maps(net_predictor(trainer.net, trainer.cfg.precision, trainer.device), val_loader,
                        trainer.normalize, trainer.device, _reduce(trainer))
    lr = epoch_lrs(trainer.cfg, trainer.epoch)["decoder"]
    trainer.end_epoch({"epoch": trainer.epoch + 1, "loss": loss, "train_cc": train_cc, "val_kld": val["kld"],
                       "val_cc": val["cc"], "lr_decoder": lr, "seconds": clock.total()})


def _reduce(trainer: SaliencyTrainer) -> Reduce | None:
    """Sum validation sums and counts over the ranks (each scored its share of the held-out images)."""
    return distributed.all_sum_ if trainer.info.is_distributed else None


def _write_log(path: Path, rows: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()} for row in rows)
    write_text_atomic(path, buf.getvalue())


def _finish(trainer: SaliencyTrainer, info: DataFile, val_loader: torch.utils.data.DataLoader,
            val_rows: np.ndarray, out: Path, clock: TrainingClock) -> PretrainResult | None:
    """Precise BN, held-out metrics of the model and the centre bias, the figure, `model.pt`; drop the checkpoint."""
    trainer.precise_bn(trainer.cfg.precise_bn_batches)
    seconds = clock.total()
    metrics = _metrics(trainer, info, val_loader)
    if not trainer.info.is_main:
        return None
    metrics.update(train_seconds=seconds, epochs=trainer.epoch, train_images=len(trainer.train_rows),
                   val_images=len(val_rows))
    grid = _write_predictions(out / "predictions.png", trainer, val_rows[:GRID_IMAGES])
    write_json_atomic(out / "metrics.json", metrics)
    write_headline(out / "metrics.json", headline(metrics, SALIENCY))  # what `dvc metrics show` prints
    cfg = trainer.cfg
    # No wall time in model.pt (metrics.json has it): the same run writes the same bytes, so its sha256 stays put.
    meta = {"params": params_dump(cfg), "metrics": {k: v for k, v in metrics.items() if k != "train_seconds"},
            "data": str(info.path), "val_rows": val_rows.tolist(), "ser_version": __version__,
            "init_from_sha256": file_sha256(Path(cfg.init_from)) if cfg.init_from else None}
    meta[INPUT_KEY] = input_record(info.height, info.width)  # precompute / predict warn on data of another size
    if cfg.backbone_weights:  # only then: model.pt of other runs keeps the metadata it always had
        meta["backbone_weights_sha256"] = file_sha256(Path(cfg.backbone_weights))
    save_saliency_checkpoint(out / "model.pt", trainer.net, info.fingerprint, meta)
    remove_checkpoint(out / CHECKPOINT)
    files = [out / "model.pt", out / "metrics.json", out / "headline.json", grid, out / "train_log.csv"]
    return PretrainResult(model=out / "model.pt", metrics=metrics, files=files)


def _metrics(trainer: SaliencyTrainer, info: DataFile, val_loader: torch.utils.data.DataLoader) -> dict[str, float]:
    net = net_predictor(trainer.net, trainer.cfg.precision, trainer.device)
    bias = center_bias_predictor(info.height, info.width, trainer.device)
    model = evaluate_maps(net, val_loader, trainer.normalize, trainer.device, _reduce(trainer))
    baseline = evaluate_maps(bias, val_loader, trainer.normalize, trainer.device, _reduce(trainer))
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
