"""Typed configuration: pydantic models mirroring `params.yaml` section by section, assembled into `Params`.

Each library package owns the section it reads, beside its code: `data` and `data.synth` in
`ser_cli.data.settings`, `saliency` in `ser_cli.saliency.settings`, the shared `train` keys in
`ser_cli.continual.settings`; this module adds the sections only a stage reads (`precompute`, `evaluate`, the stage's
`train` keys) and assembles them. Nothing in the library imports it. Every stage reads its section from one
validated `Params` object. Defaults live here and only here; `params.yaml`
repeats them with comments for DVC. Unknown keys, wrong types and out-of-range values are rejected
(`extra="forbid"`), and `--set section.key=value` overrides are merged *before* validation so they get exactly the
same checks (see `ser_cli.config_loader`).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from ser_cli.continual.settings import TrainFields, TrainSettings, resolve_classifier_init
from ser_cli.data.settings import DataConfig, SynthConfig
from ser_cli.runtime.section import MAX_SEED, MAX_WEIGHT, PRECISION_HELP, Precision, Section
from ser_cli.saliency.settings import SaliencyConfig

__all__ = ["DataConfig", "EvaluateConfig", "Params", "PrecomputeConfig", "SaliencyConfig", "SynthConfig", "TrainConfig"]


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
        kind = resolve_classifier_init(self.classifier_init, self.ser, self.saliency_checkpoint)
        if self.backbone_weights:
            kind = "checkpoint"
        if class_il_logits not in ("seen", "all"):
            raise ValueError(f"class_il_logits must be seen or all (got {class_il_logits!r})")
        # Every shared value was validated once, as this section was; built without a second pass (the same
        # TrainFields validators would only run again), `mnp_blocks` as the library's tuple.
        shared = {name: getattr(self, name) for name in TrainFields.model_fields}
        shared["mnp_blocks"] = tuple(self.mnp_blocks)
        return TrainSettings.model_construct(**shared, classifier_init=kind, class_il_logits=class_il_logits)


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
