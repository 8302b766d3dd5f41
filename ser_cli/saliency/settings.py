"""The `saliency` section of `params.yaml`: what `ser pretrain-saliency` reads, beside the saliency trainer.

`ser_cli.config.Params` assembles it with the other sections.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from ser_cli.runtime.section import MAX_LR, MAX_SEED, MAX_WEIGHT, PRECISION_HELP, Precision, Section


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
