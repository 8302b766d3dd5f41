"""Pretraining loop of the saliency predictor: optimiser groups, deterministic data order, resumable epochs.

Follows SER (Bellitto et al., NeurIPS 2024; method.md sections 3-4) and UNISAL (Droste et al., ECCV 2020): SGD
with momentum and two parameter groups, the decoder at `lr` and the encoder at `lr * encoder_lr_factor`, each with
its own weight decay; both rates decay exponentially per epoch; the loss is `saliency_loss` (KLD, optionally
minus weighted CC and NSS). After the last epoch the BatchNorm statistics can be re-estimated with the final
weights ("precise BN", Wu & Johnson 2021): the decoder's BN momentum of 0.01 (UNISAL) makes its running averages
lag the weights by ~100 steps, which a short pretraining feels as a worse eval-mode KLD. The order of the
training rows in epoch `e` depends only on (seed, e), and the trainer counts optimiser steps within the epoch, so
a run resumed from a checkpoint rebuilds the same loader, skips the batches already consumed and continues exactly
where it stopped. Nothing here prints: the stage owns progress.

On K ranks (`torchrun`) the network runs inside DistributedDataParallel and each rank takes its share of the same
epoch order through a `DistributedSampler` (`runtime.distributed.sampler_share`): `batch_size` is per rank, and
step s of the K ranks together covers exactly the rows of one process's step s with batch K * batch_size.
DistributedSampler's own shuffle (seeded by seed + epoch through `set_epoch`) is not used: the order stays
`epoch_order(seed, epoch)`, which is what makes K ranks reproduce one process with the K-fold batch. Epoch means
and validation scores are sums and counts summed over ranks before dividing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ser_cli.data.dataset import collate
from ser_cli.metrics.saliency import SCORE_NAMES, cc, center_bias_map, saliency_loss, saliency_scores
from ser_cli.models.saliency_net import SaliencyNet
from ser_cli.models.saliency_optimizer import saliency_sgd
from ser_cli.runtime import distributed
from ser_cli.runtime.checkpoint import first_nonfinite
from ser_cli.runtime.device import autocast
from ser_cli.runtime.errors import RunFailure, UserError
from ser_cli.runtime.seeding import derive_seed
from ser_cli.saliency.settings import SaliencyConfig

HOLDOUT_STREAM = 1
ORDER_STREAM = 2
PRECISE_BN_STREAM = 3
Normalize = Callable[[Tensor], Tensor]
Predict = Callable[[Tensor], Tensor]
Reduce = Callable[[Tensor], Tensor]  # sums over ranks (`runtime.distributed.all_sum_`), or nothing in one process


def holdout_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split rows 0..n-1 into (train, validation), sorted, with round(n * fraction) rows (at least 1) held out.

    Raises:
        UserError: fewer than two rows, so one side would be empty.
    """
    if n < 2:
        raise UserError(f"need at least 2 training images to hold out a validation split, got {n}")
    n_val = min(n - 1, max(1, round(n * fraction)))
    perm = np.random.default_rng(derive_seed(seed, HOLDOUT_STREAM)).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def epoch_order(rows: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """The rows in the order epoch `epoch` visits them: a permutation that depends only on (seed, epoch)."""
    return rows[np.random.default_rng(derive_seed(seed, ORDER_STREAM, epoch)).permutation(len(rows))]


def build_optimizer(net: SaliencyNet, cfg: SaliencyConfig) -> torch.optim.SGD:
    """The saliency optimiser (`ser_cli.models.saliency_optimizer`) with the `saliency` section's hyperparameters."""
    return saliency_sgd(net, cfg.lr, encoder_lr_factor=cfg.encoder_lr_factor, momentum=cfg.momentum,
                        weight_decay_decoder=cfg.weight_decay_decoder, weight_decay_encoder=cfg.weight_decay_encoder)


def epoch_lrs(cfg: SaliencyConfig, epoch: int) -> dict[str, float]:
    """Learning rate of each group in epoch `epoch` (0-based): base rate times lr_decay ** epoch."""
    decay = cfg.lr_decay**epoch
    return {"decoder": cfg.lr * decay, "encoder": cfg.lr * cfg.encoder_lr_factor * decay}


def set_epoch_lr(optimizer: torch.optim.Optimizer, cfg: SaliencyConfig, epoch: int) -> None:
    """Set both groups' rates for `epoch`; a closed form of the schedule, so resuming needs no scheduler state."""
    lrs = epoch_lrs(cfg, epoch)
    for group in optimizer.param_groups:
        group["lr"] = lrs[group["name"]]


def make_loader(dataset: Dataset, rows: np.ndarray, batch_size: int, workers: int) -> DataLoader:
    """Batches of `dataset[i]` for i in `rows`, in that order (`SplitDataset` reads each batch in one call). The
    loader's own generator keeps its iterator from drawing on the global torch RNG (the decoder's dropout uses it
    and a checkpoint restores it)."""
    return DataLoader(dataset, batch_size=batch_size, sampler=rows.tolist(), num_workers=workers, collate_fn=collate,
                      generator=torch.Generator(), pin_memory=False)


@dataclass
class StepResult:
    """One optimiser step: where it was and its (device, detached) batch loss and CC."""

    epoch: int
    step: int
    loss: Tensor
    cc: Tensor


class SaliencyTrainer:
    """Train a `SaliencyNet` on rows of a dataset of (image uint8, map, label, row[, fixation mask]) items.

    Attributes:
        epoch: Epochs completed.
        step: Optimiser steps completed within the current epoch.
        log: One dict per completed epoch (filled by `end_epoch`).
    """

    def __init__(self, net: SaliencyNet, cfg: SaliencyConfig, device: torch.device, normalize: Normalize,
                 dataset: Dataset, train_rows: np.ndarray,
                 info: distributed.DistInfo = distributed.ONE_PROCESS) -> None:
        """Set up the optimiser.

        Args:
            net: The network, already on `device`.
            cfg: The `saliency` parameters.
            device: Where the network runs.
            normalize: uint8 images (B, 3, H, W) -> normalised float images on `device`.
            dataset: Items as `SplitDataset(..., with_fixations=True)` returns them.
            train_rows: Dataset indices to train on.
            info: This process's place in a torchrun launch (one process by default); the process group must be
                joined before.
        """
        self.net, self.cfg, self.device, self.normalize = net, cfg, device, normalize
        self.dataset, self.train_rows, self.info = dataset, train_rows, info
        self.model = distributed.wrap_ddp(net, device, info)  # what the training steps run (`net` in one process)
        self.optimizer = build_optimizer(net, cfg)
        self.epoch, self.step = 0, 0
        self.log: list[dict[str, float]] = []
        self._sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss, CC summed over this epoch's steps

    @property
    def steps_per_epoch(self) -> int:
        per_rank = -(-len(self.train_rows) // self.info.world_size)
        return -(-per_rank // self.cfg.batch_size)

    def train_epoch(self) -> Iterator[StepResult]:
        """Run the rest of the current epoch, yielding after every optimiser step (the caller may checkpoint)."""
        set_epoch_lr(self.optimizer, self.cfg, self.epoch)
        order = epoch_order(self.train_rows, self.cfg.seed, self.epoch)
        order = distributed.sampler_share(order, self.info)[self.step * self.cfg.batch_size:]
        self.model.train()
        for batch in make_loader(self.dataset, order, self.cfg.batch_size, self.cfg.workers):
            loss, batch_cc = self._train_step(batch)
            self._sums += torch.stack((loss, batch_cc)).double()
            self.step += 1
            yield StepResult(self.epoch, self.step, loss, batch_cc)

    def _train_step(self, batch: list[Tensor]) -> tuple[Tensor, Tensor]:
        target = batch[1].to(self.device, non_blocking=True)  # (B, H, W), each map sums to 1
        fixations = batch[4].to(self.device, non_blocking=True) if self.cfg.w_nss > 0 else None  # (B, H, W) bool
        with autocast(self.cfg.precision, self.device):
            pred, _ = self.model(self.normalize(batch[0]))  # (B, 1, H, W)
        pred = pred[:, 0].float()  # losses in fp32: the KLD's epsilon is far below bf16 resolution
        loss = saliency_loss(pred, target, fixations, w_cc=self.cfg.w_cc, w_nss=self.cfg.w_nss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach(), cc(pred.detach(), target).mean()

    def epoch_means(self) -> tuple[float, float]:
        """Mean training loss and CC over the current epoch's steps of every rank (one host sync).

        Raises:
            RunFailure: the loss or a weight is not finite (diverged).
        """
        steps = max(self.step, 1) * self.info.world_size
        loss_sum, cc_sum = distributed.all_sum_(self._sums.clone()).tolist()
        mean_loss = loss_sum / steps
        if not np.isfinite(mean_loss):
            raise RunFailure(f"saliency loss became {mean_loss} in epoch {self.epoch + 1}; lower saliency.lr")
        bad = first_nonfinite(self.net.state_dict())  # once per epoch: the weights can diverge before the loss shows it
        if bad is not None:
            raise RunFailure(f"saliency weight {bad} became NaN or inf in epoch {self.epoch + 1}; lower saliency.lr")
        return mean_loss, cc_sum / steps

    def precise_bn(self, n_batches: int) -> None:
        """Re-estimate every BatchNorm's running statistics on `n_batches` training batches (a fixed draw).

        On K ranks each rank takes its share of the draw's first n_batches * K * batch_size rows; the ranks'
        statistics are then averaged (with synchronised BatchNorm they are already equal, each from the K ranks'
        batches together, and the average leaves them unchanged).
        """
        if n_batches == 0:
            return
        rng = np.random.default_rng(derive_seed(self.cfg.seed, PRECISE_BN_STREAM))
        rows = rng.permutation(self.train_rows)[: n_batches * self.cfg.batch_size * self.info.world_size]
        loader = make_loader(self.dataset, distributed.sampler_share(rows, self.info), self.cfg.batch_size,
                             self.cfg.workers)
        with autocast(self.cfg.precision, self.device):
            recompute_bn_stats(self.net, (self.normalize(batch[0]) for batch in loader))
        if self.info.is_distributed:
            _average_bn_stats(self.net, self.info.world_size)

    def end_epoch(self, record: dict[str, float]) -> None:
        """Close the current epoch: append `record` to the log and move to the next epoch's first step."""
        self.log.append(record)
        self.epoch, self.step = self.epoch + 1, 0
        self._sums.zero_()

    def state_dict(self) -> dict[str, Any]:
        """Model, optimiser (momentum buffers), position and epoch sums: everything but the RNG states."""
        return {"model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(), "epoch": self.epoch,
                "step": self.step, "sums": self._sums.cpu(), "log": list(self.log)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` saved."""
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self._sums.copy_(state["sums"])
        self.log = list(state["log"])


@torch.no_grad()
def _average_bn_stats(net: nn.Module, world_size: int) -> None:
    """Every BatchNorm's running mean and variance replaced by their average over the ranks."""
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            for stat in (m.running_mean, m.running_var):
                distributed.all_sum_(stat).div_(world_size)


@torch.no_grad()
def recompute_bn_stats(net: nn.Module, batches: Iterable[Tensor]) -> None:
    """Replace BatchNorm running statistics by their average over `batches` under the current weights.

    Like `torch.optim.swa_utils.update_bn`, but everything except BatchNorm stays in eval mode, so dropout does not
    distort the statistics. Each layer's running mean / variance become the average of the per-batch mean /
    unbiased variance (momentum None = cumulative average). The network is left in eval mode.

    Args:
        net: Network with BatchNorm layers.
        batches: Normalised input batches (B, 3, H, W).
    """
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    net.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    for x in batches:
        net(x)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    net.eval()


def net_predictor(net: SaliencyNet, precision: str, device: torch.device) -> Predict:
    """Normalised images (B, 3, H, W) -> predicted maps (B, H, W) float32, network in eval mode."""

    @torch.no_grad()
    def predict(x: Tensor) -> Tensor:
        net.eval()
        with autocast(precision, device):
            return net(x)[0][:, 0].float()

    return predict


def center_bias_predictor(height: int, width: int, device: torch.device) -> Predict:
    """The same Gaussian centre map for every image: the baseline a trained predictor must beat."""
    prior = center_bias_map(height, width, device=device)  # (H, W)
    return lambda x: prior.expand(x.shape[0], height, width)


@torch.no_grad()
def evaluate_maps(predict: Predict, loader: DataLoader, normalize: Normalize, device: torch.device,
                  reduce: Reduce | None = None) -> dict[str, float]:
    """Mean KLD, CC, SIM (+ NSS, AUC-Judd where items carry fixation masks) of `predict` over `loader`.

    Images without fixations give NaN NSS / AUC and are left out of those two means; a metric no image could
    score is NaN. Sums stay on the device; one host sync at the end. With `reduce` (each rank scoring its share
    of the images), sums and counts are summed over the ranks first, so the means are those of all the images.
    """
    sums: dict[str, Tensor] = {}
    counts: dict[str, Tensor] = {}
    for batch in loader:
        target = batch[1].to(device, non_blocking=True)  # (B, H, W)
        fixations = batch[4].to(device, non_blocking=True) if len(batch) > 4 else None  # (B, H, W)
        scores = saliency_scores(predict(normalize(batch[0])), target, fixations)
        for name, values in scores.items():
            valid = ~torch.isnan(values)
            sums[name] = sums.get(name, 0) + torch.where(valid, values, 0).double().sum()
            counts[name] = counts.get(name, 0) + valid.sum()
    if reduce is not None:  # every rank the same keys, in the same order, also one that scored no image
        totals = reduce(torch.tensor([[float(sums.get(k, 0)), float(counts.get(k, 0))] for k in SCORE_NAMES],
                                     dtype=torch.float64, device=device))  # (len(SCORE_NAMES), 2)
        return {k: s / c if c else float("nan") for k, (s, c) in zip(SCORE_NAMES, totals.tolist(), strict=True)}
    means = torch.stack([sums[name] / counts[name] for name in sums]).tolist()  # 0 / 0 = NaN for no valid image
    return dict(zip(sums, means, strict=True))
