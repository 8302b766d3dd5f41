"""The `data` section of `params.yaml` (and its `data.synth` part): what the data package reads, beside it.

`ser_cli.config.Params` assembles it with the other sections; `ser data synth` hands `SynthConfig` to
`ser_cli.data.synth`, and the importers read the image size, storage and workers.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ser_cli.runtime.section import MAX_SEED, Section


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
