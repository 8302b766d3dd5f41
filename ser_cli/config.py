"""Typed configuration: pydantic models mirroring `params.yaml` section by section.

Every stage reads its section from one validated `Params` object. Defaults live here and only here; `params.yaml`
repeats them with comments for DVC. Unknown keys, wrong types and out-of-range values are rejected
(`extra="forbid"`), and `--set section.key=value` overrides are merged *before* validation so they get exactly the
same checks (see `ser_cli.config_loader`).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from ser_cli.continual.settings import MAX_LR, MAX_SEED, MAX_WEIGHT, TrainFields, TrainSettings, resolve_classifier_init
from ser_cli.runtime.section import PRECISION_HELP, Precision, Section


class SynthConfig(Section):
    """SynthSal, the built-in benchmark (`ser data synth`)."""

    height: int = Field(64, ge=16, le=1024, description="Image height in pixels (the paper's 3:4 aspect: 64x96).")
    width: int = Field(96, ge=16, le=1024, description="Image width in pixels.")
    n_classes: int = Field(20, ge=2, le=120, description="Number of object classes (at most 120 per family).")
    train_per_class: int = Field(60, ge=1, description="Training images per class.")
    test_per_class: int = Field(20, ge=1, description="Test images per class.")
    seed: int = Field(0, ge=0, le=MAX_SEED,
                      description="Generator seed; same parameters and seed give a byte-identical file.")
    purpose: Literal["continual", "pretrain"] = Field(
        "continual",
        description="`continual`: the benchmark's classes. `pretrain`: a disjoint family of classes, used to "
        "pretrain the saliency predictor on classes the continual learner never sees (as the paper does).",
    )
    spurious: bool = Field(
        False, description="The paper's spurious-feature protocol: training images of class c brightened by 5(c+1)/255."
    )
    n_distractors: int = Field(4, ge=0, le=32, description="Class-independent distractor objects per image.")
    object_scale: tuple[float, float] = Field(
        (0.22, 0.38), description="Range of the object's size as a fraction of the shorter image side."
    )
    n_fixations: int = Field(24, ge=1, description="Fixation points per observer.")
    n_observers: int = Field(2, ge=1, description="Independent observers per image (fixations are stored for all).")
    fixation_on_object: float = Field(0.75, ge=0, le=1, description="Share of fixations on the class object.")
    fixation_on_distractors: float = Field(0.15, ge=0, le=1, description="Share of fixations on distractors.")
    blur_sigma: float = Field(
        0.035, gt=0, le=0.5, description="Gaussian blur of the fixation density, as a fraction of the image width."
    )

    @model_validator(mode="after")
    def _shares_fit(self) -> SynthConfig:
        if self.fixation_on_object + self.fixation_on_distractors > 1:
            raise ValueError("fixation_on_object + fixation_on_distractors must be <= 1 (the rest is centre bias)")
        if not 0 < self.object_scale[0] <= self.object_scale[1] <= 1:
            raise ValueError(f"object_scale must satisfy 0 < min <= max <= 1 (got {list(self.object_scale)})")
        return self


class DataConfig(Section):
    """Datasets: the synthetic benchmark and the importers of real data."""

    synth: SynthConfig = SynthConfig()
    height: int = Field(288, ge=16, le=2048, description="Height imported images are resized to (paper: 288).")
    width: int = Field(384, ge=16, le=2048, description="Width imported images are resized to (paper: 384).")
    storage: Literal["raw", "encoded"] = Field(
        "raw", description="`raw`: decoded uint8 pixels (fast to read). `encoded`: PNG bytes (small, decoded per read)."
    )
    workers: int = Field(2, ge=0, description="Worker processes for import and data loading (0 = in process).")


class SaliencyConfig(Section):
    """`ser pretrain-saliency`: the UNISAL-style saliency predictor (method.md section 3)."""

    backbone: str = Field("resnet18_reduced", description="Encoder backbone; must match the classifier's for SER.")
    n_gaussians: int = Field(0, ge=0, le=64, description="Learned Gaussian prior maps (UNISAL: 16; the paper: 0).")
    epochs: int = Field(4, ge=1, description="Passes over the pretraining split (SynthSal defaults: ~3 CPU-minutes).")
    batch_size: int = Field(16, ge=1, description="Images per optimiser step and process: under torchrun with K "
                            "processes each takes batch_size images, a step sees K * batch_size.")
    lr: float = Field(0.05, gt=0, le=MAX_LR,
                      description="Decoder learning rate; the encoder uses lr * encoder_lr_factor.")
    encoder_lr_factor: float = Field(0.1, gt=0, le=1)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay_decoder: float = Field(1e-4, ge=0, le=1)
    weight_decay_encoder: float = Field(1e-5, ge=0, le=1)
    lr_decay: float = Field(0.7, gt=0, le=1, description="Exponential decay of both learning rates per epoch.")
    w_cc: float = Field(0.0, ge=0, le=MAX_WEIGHT, description="Weight of the -CC term added to the KLD loss.")
    w_nss: float = Field(0.0, ge=0, le=MAX_WEIGHT, description="Weight of the -NSS term (needs fixation points).")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="Share of the training split held out for validation.")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    init_from: str | None = Field(None, description="Classification checkpoint (resnet18 state dict) for the encoder.")
    backbone_weights: str | None = Field(
        None, description="A local torchvision weights file (state dict, e.g. resnet50-*.pth) the encoder starts from; "
        "torchvision backbones only (resnet50, mobilenet_v2, efficientnet_b0). null: random weights.")
    precision: Precision = Field("auto", description=PRECISION_HELP)
    checkpoint_every: int = Field(
        50, ge=0, description="Also write checkpoint.pt every N optimiser steps (0: only at epoch ends)."
    )
    workers: int = Field(0, ge=0, description="DataLoader worker processes (0: read in the training process).")
    precise_bn_batches: int = Field(
        20, ge=0, description="After training, re-estimate BatchNorm statistics on N training batches with the "
        "final weights (precise BN); 0 keeps the running averages."
    )
    sync_bn: bool = Field(
        False, description="Under torchrun: BatchNorm statistics over the K processes' batches together "
        "(synchronised BatchNorm), so K processes train like one with a K-fold batch; false: each process "
        "normalises with its own batch's statistics. No effect in one process."
    )

    @model_validator(mode="after")
    def _one_encoder_start(self) -> SaliencyConfig:
        if self.init_from and self.backbone_weights:
            raise ValueError("saliency.init_from and saliency.backbone_weights both set the encoder's start; "
                             "set only one")
        return self


class PrecomputeConfig(Section):
    """`ser precompute`: saliency targets for every image of the classification dataset."""

    batch_size: int = Field(32, ge=1)
    compression: Literal["none", "gzip", "lzf"] = Field("gzip", description="HDF5 filter for the maps.")
    compression_level: int = Field(1, ge=0, le=9, description="gzip level (ignored otherwise).")
    workers: int = Field(0, ge=0, description="DataLoader worker processes reading the data file.")
    precision: Precision = Field("auto", description=PRECISION_HELP)


class TrainConfig(TrainFields):
    """`ser train`: online class-incremental learning with a replay method, optionally with SER.

    The shared keys, their defaults and bounds are `ser_cli.continual.settings.TrainFields`; here only what the stage
    alone reads. `settings()` is the library's view of this section.
    """

    saliency_checkpoint: str | None = Field(None, description="`model.pt` from `ser pretrain-saliency` (SER only).")
    classifier_init: str = Field(
        "auto", description="Where the classifier's backbone starts: saliency (the encoder of "
        "train.saliency_checkpoint, head fresh), random, a classification checkpoint file, or auto (the authors' "
        "released protocol: plain methods from the saliency encoder when train.saliency_checkpoint is set, SER "
        "runs random).")
    backbone_weights: str | None = Field(
        None, description="A local torchvision weights file (state dict) the classifier's backbone starts from, head "
        "fresh; torchvision backbones only (resnet50, mobilenet_v2, efficientnet_b0). null: train.classifier_init "
        "decides.")
    workers: int = Field(0, ge=0, description="DataLoader worker processes reading the stream (0: in process).")
    loggers: list[Literal["tensorboard", "dvclive"]] = Field(
        [], description="Also log the training curves to TensorBoard (RUN/tensorboard/) and/or DVCLive (RUN/dvclive/): "
        "[tensorboard, dvclive]; needs pip install 'ser[loggers]'. []: train_log.csv only.")
    allow_self_targets: bool = Field(
        False, description="Let SER train against maps made by train.saliency_checkpoint itself (refused by default: "
        "the branch already predicts its own maps, so its saliency loss teaches nothing; the paper's targets come "
        "from an oracle unrelated to S).")

    @model_validator(mode="after")
    def _one_classifier_start(self) -> TrainConfig:
        if self.backbone_weights and self.classifier_init not in ("auto", "random"):
            raise ValueError(f"train.backbone_weights and train.classifier_init={self.classifier_init} both set the "
                             "classifier's start; set only one")
        return self

    def settings(self, class_il_logits: str = "seen") -> TrainSettings:
        """The library's settings of this run: the shared keys, `classifier_init` resolved to its kind (a
        torchvision `backbone_weights` file is a checkpoint start)."""
        shared = {name: getattr(self, name) for name in TrainFields.model_fields}
        kind = resolve_classifier_init(self.classifier_init, self.ser, self.saliency_checkpoint)
        if self.backbone_weights:
            kind = "checkpoint"
        return TrainSettings(**shared, classifier_init=kind, class_il_logits=class_il_logits)


def _parse_epsilon(value: object) -> object:
    """Accept `0.0078` or `"2/255"` (the notation papers use)."""
    if isinstance(value, str):
        try:
            return float(Fraction(value.strip()))
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"not a number or fraction like '2/255' (got {value!r})") from None
    return value


Epsilon = Annotated[float, BeforeValidator(_parse_epsilon), Field(ge=0, le=1)]


class EvaluateConfig(Section):
    """`ser evaluate`: continual-learning metrics, adversarial robustness, saliency quality."""

    epsilons: list[Epsilon] = Field(
        ["1/255", "2/255", "4/255", "8/255"],
        description="L-inf attack budgets on the [0, 1] image scale; write them as floats or as 'k/255'.",
    )
    attacks: list[Literal["pgd", "fgsm"]] = Field(["pgd", "fgsm"])
    pgd_steps: int = Field(10, ge=1)
    pgd_step_factor: float = Field(0.25, gt=0, le=MAX_WEIGHT, description="PGD step size as a fraction of epsilon.")
    attack_images: int = Field(500, ge=1, description="Test images attacked (a fixed, class-stratified subset).")
    batch_size: int = Field(64, ge=1)
    class_il_logits: Literal["seen", "all"] = Field(
        "seen", description="`seen`: argmax over classes seen so far; `all`: over every logit (the authors' code)."
    )
    seed: int = Field(0, ge=0, le=MAX_SEED)


class Params(Section):
    """The whole `params.yaml`."""

    data: DataConfig = DataConfig()
    saliency: SaliencyConfig = SaliencyConfig()
    precompute: PrecomputeConfig = PrecomputeConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
