"""Hyperparameters of one continual-learning run: the single definition of their defaults, bounds and docs.

`TrainFields` holds every `train` key the library and `params.yaml` share; `TrainSettings` (what the library
reads) adds the class-IL evaluation rule and the resolved kind of `classifier_init`; `ser_cli.config.TrainConfig`
(the `train` section of `params.yaml`) adds what only the stage uses (`saliency_checkpoint`, `workers`,
`classifier_init` as given) and converts with `TrainConfig.settings()`. A method's own hyperparameters are a
`MethodKnobs` section registered under the method's name (`@method_knobs("derpp")`; DER++'s extends DER's `alpha`):
`TrainFields` inherits every section, so they stay flat `train.NAME` keys, and `method_knob_owners()` tells
`run_io.config_hash` which methods read each. They live here, not in the method files, so that `ser_cli.config` (which
every DVC stage imports) does not import the training stack. Defaults follow the paper's online setting (Bellitto et
al., NeurIPS 2024, section 5 and method.md section 2): one pass, batch 8, replay minibatch 8, SGD lr 0.01 without
momentum, DER++ alpha 0.1 / beta 0.5, CoPE 256-d prototypes / T 0.05 / momentum 0.9 / 5 inner iterations (the SER
authors' code), SER decoder lr 0.005.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar

from pydantic import Field, ValidationError, field_validator, model_validator

from ser_cli.runtime.errors import UserError
from ser_cli.runtime.registry import Registry
from ser_cli.runtime.section import (
    MAX_LR,
    MAX_SEED,
    MAX_WEIGHT,
    MEMORY_FORMAT_HELP,
    PRECISION_HELP,
    MemoryFormat,
    Precision,
    Section,
    error_message,
)

# Keys added after runs were made: `run_io.config_hash` leaves each out at this value (what those runs did), so every
# earlier run keeps its identity and resumes.
HASHED_WHEN_CHANGED = {"sal_encoder_lr_factor": 0.1, "sal_momentum": 0.9, "sal_weight_decay_decoder": 1e-4,
                       "sal_weight_decay_encoder": 1e-5}


class MethodKnobs(Section):
    """The hyperparameters one method alone reads; subclass it per method and register it with `method_knobs`."""


K = TypeVar("K", bound=type[MethodKnobs])
# method name -> its knobs, in registration order (the order of their keys in `TrainFields`)
METHOD_KNOBS: Registry = Registry("method knobs")  # name -> type[MethodKnobs]


def method_knobs(method: str) -> Callable[[K], K]:
    """Decorator registering a `MethodKnobs` subclass as the knobs of `method` (the name it is registered under)."""
    return METHOD_KNOBS.register(method)


@method_knobs("der")
class DerKnobs(MethodKnobs):
    """DER's knobs (Buzzega et al., NeurIPS 2020; `methods/der.py`)."""

    alpha: float = Field(0.1, ge=0, le=MAX_WEIGHT, description="DER/DER++ logit-replay weight.")


@method_knobs("derpp")
class DerppKnobs(DerKnobs):
    """DER++'s knobs: DER's `alpha` and the label-replay weight (`methods/derpp.py`)."""

    beta: float = Field(0.5, ge=0, le=MAX_WEIGHT, description="DER++ label-replay weight.")


@method_knobs("cope")
class CopeKnobs(MethodKnobs):
    """CoPE's knobs (De Lange & Tuytelaars, ICCV 2021; `methods/cope.py`)."""

    cope_dim: int = Field(256, ge=1, description="CoPE embedding and prototype width.")
    cope_temperature: float = Field(0.05, gt=0, le=MAX_WEIGHT,
                                    description="CoPE temperature T of the PPP loss and the logits cos/T.")
    cope_momentum: float = Field(0.9, ge=0, lt=1, description="CoPE prototype momentum m: p <- normalise(m p + (1 - m) "
                                 "class mean of the batch's embeddings).")
    cope_iterations: int = Field(5, ge=1, description="CoPE inner iterations per stream batch, each with a new replay "
                                 "draw and one SGD step (the paper's code: 5).")


def method_knob_owners() -> dict[str, tuple[str, ...]]:
    """Each method knob -> the methods whose knobs declare it (`alpha`: der, derpp)."""
    owners: dict[str, tuple[str, ...]] = {}
    for method, knobs in METHOD_KNOBS.items():
        for name in knobs.model_fields:
            owners[name] = (*owners.get(name, ()), method)
    return owners


def _knob_bases() -> tuple[type[MethodKnobs], ...]:
    """The registered knobs as bases of `TrainFields`: each once (DerKnobs only through DerppKnobs), the last
    registered first, so that their keys follow in registration order."""
    sections = list(METHOD_KNOBS.values())
    leaves = [k for k in sections if not any(o is not k and issubclass(o, k) for o in sections)]
    return tuple(reversed(leaves))


class _LeadingFields(Section):
    """The `train` keys before the methods' knobs: a class of their own only so that the keys keep the order they
    have always had (resolved params files and the list of known keys in errors show them in order)."""

    method: str = Field("derpp", description="A registered method (`ser train --help` lists them); NAME_ser: with "
                        "SER.")
    ser: bool = Field(False, description="Add Saliency-driven Experience Replay to the method.")
    backbone: str = Field("resnet18_reduced", description="Classifier backbone (resnet18 in the paper).")
    n_tasks: int = Field(5, ge=1)
    classes_per_task: int = Field(4, ge=1)
    epochs: int = Field(1, ge=1, description="Passes over each task's stream (online: 1).")
    batch_size: int = Field(8, ge=1, description="Stream batch size.")
    minibatch_size: int = Field(8, ge=1, description="Replay draw size.")
    buffer_size: int = Field(2000, ge=0, description="Replay buffer capacity in images.")
    lr: float = Field(0.01, gt=0, le=MAX_LR, description="Classifier SGD learning rate (MNP parameters included).")
    momentum: float = Field(0.0, ge=0, lt=1, description="Classifier SGD momentum (paper: 0).")
    weight_decay: float = Field(0.0, ge=0, le=1, description="Classifier SGD weight decay (paper: 0).")
    seed: int = Field(0, ge=0, le=MAX_SEED,
                      description="Seeds weights, buffer decisions, replay draws and the data order.")
    mnp: str = Field("multiply", description="Modulation: multiply, dwseparable, aggregate.")
    mnp_blocks: list[int] = Field([1, 1, 1, 1, 1], description="Five 0/1 flags: modulate stem and stages 1-4.")
    saliency_frozen: bool = Field(False, description="Keep the saliency branch fixed (eval mode, no optimiser).")
    sal_lr: float = Field(0.005, gt=0, le=MAX_LR, description="SER branch's decoder learning rate (encoder: "
                          "sal_encoder_lr_factor x).")
    sal_encoder_lr_factor: float = Field(0.1, gt=0, le=1, description="SER branch's encoder lr as a share of sal_lr.")
    sal_momentum: float = Field(0.9, ge=0, lt=1, description="SER branch's SGD momentum.")
    sal_weight_decay_decoder: float = Field(1e-4, ge=0, le=1, description="SER branch's decoder weight decay.")
    sal_weight_decay_encoder: float = Field(1e-5, ge=0, le=1, description="SER branch's encoder weight decay.")


class TrainFields(*_knob_bases(), _LeadingFields):
    """The `train` keys shared by `params.yaml` and the library: the leading ones, every method's knobs, these."""

    stream_taps: Literal["train", "eval"] = Field(
        "train", description="BatchNorm mode of the saliency features that modulate the stream batch: train (the "
        "authors' design: those of the saliency step's forward) or eval (as replay and test images get).")
    diagnostics_every: int = Field(25, ge=0, description="Log modulation diagnostics every N steps (0: off).")
    precision: Precision = Field("auto", description=PRECISION_HELP)
    checkpoint_every: int = Field(0, ge=0, description="Also checkpoint every N steps (0: only at task ends).")
    activation_checkpointing: bool = Field(
        False, description="Recompute the classifier's blocks in the backward instead of keeping their activations: "
        "less memory for about one more forward per step; the same weights.")
    memory_format: MemoryFormat = Field("auto", description=MEMORY_FORMAT_HELP)
    compile: bool = Field(
        False, description="torch.compile the classifier and the saliency network (inductor): for long GPU runs; "
        "the first steps pay the compilation, results equal eager ones up to float rounding.")

    @model_validator(mode="before")
    @classmethod
    def _method_alias(cls, data: object) -> object:
        # `derpp_ser` is `derpp` with the SER switch on.
        if isinstance(data, dict) and isinstance(data.get("method"), str) and data["method"].endswith("_ser"):
            data = {**data, "method": data["method"].removesuffix("_ser"), "ser": True}
        return data

    @field_validator("mnp_blocks")
    @classmethod
    def _five_flags(cls, v: Sequence[int]) -> Sequence[int]:
        if len(v) != 5 or any(b not in (0, 1) for b in v):
            raise ValueError(f"must be five 0/1 flags (got {list(v)})")
        return v

    @model_validator(mode="after")
    def _buffer_fits_draw(self) -> TrainFields:
        if 0 < self.buffer_size < self.minibatch_size:
            raise ValueError(f"buffer_size {self.buffer_size} is smaller than minibatch_size {self.minibatch_size}")
        return self


class TrainSettings(TrainFields):
    """Everything `ContinualTrainer` needs to know about a run besides the data and the device.

    Built from keyword arguments (a bad value raises `UserError` naming `train.KEY`), from a `TrainConfig`
    (`TrainConfig.settings()`), or from a saved dict (`from_mapping`).
    """

    # a tuple here, so the library's settings stay hashable
    mnp_blocks: tuple[int, ...] = Field((1, 1, 1, 1, 1), description="Five 0/1 flags: modulate stem and stages 1-4.")
    class_il_logits: Literal["seen", "all"] = Field(
        "seen", description="Class-IL argmax over the classes seen so far, or over all logits (the authors' code).")
    classifier_init: Literal["random", "saliency", "checkpoint"] = Field(
        "random", description="Where the classifier's backbone started: random, saliency (the saliency checkpoint's "
        "encoder) or checkpoint (a classification checkpoint); the stage loads the weights.")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as err:
            raise UserError("; ".join(f"train.{'.'.join(map(str, e['loc'])) or 'settings'}: {error_message(e)}"
                                      for e in err.errors(include_url=False))) from None

    @property
    def n_classes(self) -> int:
        """Width of the classifier head: every class of every task."""
        return self.n_tasks * self.classes_per_task

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> TrainSettings:
        """Build from a saved dict (a checkpoint's or `model.pt`'s `settings`), ignoring keys that are not fields.

        A `classifier_init` of `auto` or a file path is resolved to its kind (`resolve_classifier_init`).
        """
        kept = {k: v for k, v in values.items() if k in cls.model_fields}
        if "classifier_init" in kept:
            kept["classifier_init"] = resolve_classifier_init(
                kept["classifier_init"], bool(values.get("ser")), values.get("saliency_checkpoint"))
        return cls(**kept)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (tuples as lists), for checkpoints and metrics files."""
        out = self.model_dump()
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
