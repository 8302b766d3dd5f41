"""Hyperparameters of one continual-learning run, as a plain dataclass the library reads.

The fields mirror the `train` section of `params.yaml` (`ser_cli.config.TrainConfig`, same names) plus
`class_il_logits`, so a stage converts with `TrainSettings.from_mapping(config.model_dump())`. Defaults follow the
paper's online setting (Bellitto et al., NeurIPS 2024, section 5 and method.md section 2): one pass, batch 8,
replay minibatch 8, SGD lr 0.01 without momentum, DER++ alpha 0.1 / beta 0.5, SER decoder lr 0.005.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ser_cli.runtime.errors import UserError


@dataclass(frozen=True)
class TrainSettings:
    """Everything `ContinualTrainer` needs to know about a run besides the data and the device.

    Attributes:
        method: Registered method name (`sgd`, `joint`, `er`, `er_ace`, `der`, `derpp`).
        ser: Add Saliency-driven Experience Replay (saliency branch + modulation) to the method.
        backbone: Registered backbone of the classifier (and of the saliency encoder).
        n_tasks: Number of tasks of the stream.
        classes_per_task: Classes per task; the classifier has n_tasks * classes_per_task outputs.
        batch_size: Stream batch size (the data loader's; recorded for checks).
        minibatch_size: Size of each replay draw.
        buffer_size: Replay buffer capacity in images.
        lr: Classifier SGD learning rate (MNP parameters included).
        momentum: Classifier SGD momentum (paper: 0).
        weight_decay: Classifier SGD weight decay (paper: 0).
        seed: Seeds weights, buffer decisions, replay draws and the per-task data order.
        mnp: Modulation variant (`multiply`, `dwseparable`, `aggregate`).
        mnp_blocks: Five 0/1 flags: modulate at the stem and after each of the four stages.
        saliency_frozen: Keep the saliency branch fixed: eval mode, no gradient, no optimiser.
        sal_lr: Saliency decoder learning rate; the encoder uses 0.1 * sal_lr.
        alpha: DER / DER++ weight of the logit-replay MSE.
        beta: DER++ weight of the label-replay CE.
        epochs: Passes over each task's stream (online: 1).
        precision: `fp32`, `bf16` (CUDA autocast + channels_last) or `auto` (bf16 on CUDA, fp32 on CPU).
        checkpoint_every: Also call the checkpoint callback every this many steps (0: only at task ends).
        class_il_logits: Class-IL argmax over the classes `seen` so far, or over `all` logits (the authors' code).
        classifier_init: Where the classifier's backbone started: `random`, `saliency` (the saliency checkpoint's
            encoder) or `checkpoint` (a classification checkpoint); the stage loads the weights.
        stream_taps: BatchNorm mode of the saliency features modulating the stream batch: `train` (those of the
            saliency step's own forward, the authors' design) or `eval` (a separate eval-mode pass, as for replay).
        diagnostics_every: Measure the modulation on the stream batch every this many steps (0: never).
    """

    method: str = "derpp"
    ser: bool = False
    backbone: str = "resnet18_reduced"
    n_tasks: int = 5
    classes_per_task: int = 4
    batch_size: int = 8
    minibatch_size: int = 8
    buffer_size: int = 2000
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0
    mnp: str = "multiply"
    mnp_blocks: tuple[int, ...] = field(default=(1, 1, 1, 1, 1))
    saliency_frozen: bool = False
    sal_lr: float = 0.005
    alpha: float = 0.1
    beta: float = 0.5
    epochs: int = 1
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    checkpoint_every: int = 0
    class_il_logits: Literal["seen", "all"] = "seen"
    classifier_init: Literal["random", "saliency", "checkpoint"] = "random"
    stream_taps: Literal["train", "eval"] = "train"
    diagnostics_every: int = 0

    def __post_init__(self) -> None:
        # Lists from YAML become tuples so the settings stay hashable and comparable.
        object.__setattr__(self, "mnp_blocks", tuple(int(b) for b in self.mnp_blocks))
        self._check()

    def _check(self) -> None:
        positive = ("n_tasks", "classes_per_task", "batch_size", "minibatch_size", "epochs")
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("buffer_size", "checkpoint_every", "diagnostics_every", "momentum", "weight_decay", "alpha",
                     "beta"):
            if getattr(self, name) < 0:
                raise UserError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0 or self.sal_lr <= 0:
            raise UserError(f"train.lr and train.sal_lr must be > 0, got {self.lr} and {self.sal_lr}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise UserError(f"train.precision must be one of auto, fp32, bf16, got {self.precision!r}")
        if self.classifier_init not in ("random", "saliency", "checkpoint"):
            raise UserError(f"classifier_init must be random, saliency or checkpoint, got {self.classifier_init!r}")
        if self.stream_taps not in ("train", "eval"):
            raise UserError(f"train.stream_taps must be 'train' or 'eval', got {self.stream_taps!r}")
        if self.class_il_logits not in ("seen", "all"):
            raise UserError(f"class_il_logits must be 'seen' or 'all', got {self.class_il_logits!r}")

    @property
    def n_classes(self) -> int:
        """Width of the classifier head: every class of every task."""
        return self.n_tasks * self.classes_per_task

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> TrainSettings:
        """Build from a mapping (e.g. a pydantic `model_dump()`), ignoring keys that are not fields.

        Keys such as `saliency_checkpoint` belong to the stage, not to the library, and are dropped; a
        `classifier_init` of `auto` or a file path is resolved to its kind (`resolve_classifier_init`).
        """
        names = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in values.items() if k in names}
        if "classifier_init" in kept:
            kept["classifier_init"] = resolve_classifier_init(
                kept["classifier_init"], bool(values.get("ser")), values.get("saliency_checkpoint"))
        return cls(**kept)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (tuples as lists), for checkpoints and metrics files."""
        out = dataclasses.asdict(self)
        out["mnp_blocks"] = list(self.mnp_blocks)
        return out


def resolve_classifier_init(value: str, ser: bool, saliency_checkpoint: str | None) -> str:
    """`train.classifier_init` as a kind: `auto` follows the authors' released protocol (method.md section 2).

    Plain methods given a saliency checkpoint start from its encoder (the paper's rule that baselines start from
    the same pretrained weights as the saliency network); SER runs start random (the authors' README command does
    not pass `--backbone_pretrained`). Any value other than `auto`, `saliency` and `random` is a checkpoint file.
    """
    if value == "auto":
        return "saliency" if saliency_checkpoint and not ser else "random"
    return value if value in ("saliency", "random") else "checkpoint"
