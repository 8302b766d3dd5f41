"""Where the final model looks: Grad-CAM over the test images in scope (`ser evaluate`'s attention pass).

For each image, Grad-CAM of the true class's class-IL logit at the classifier's last stage, through the run's own
`logits` (with SER: the modulated features; `ser_cli.metrics.attribution.grad_cam`). Two numbers summarise it:
`attention_on_object`, the share of the Grad-CAM mass inside the object region (data files with object masks,
e.g. SynthSal), with `attention_on_object_chance`, the same share for a uniform map (the object's area); and
`attention_saliency_cc`, the CC between Grad-CAM and the target saliency map (the maps file, or the data file's
own maps). This turns the paper's qualitative claim (SER makes the classifier attend to salient regions) into a
measurement. Images whose Grad-CAM is all zero (no channel with positive evidence for the true class) have no
attention and are left out of both means; `gradcam_zero_maps` counts them. Sums are kept per batch and folded in batch
order (`merge_attention`), so a pass split over processes gives the one-process numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor

from ser_cli.metrics.attribution import grad_cam, mass_inside
from ser_cli.metrics.saliency import cc
from ser_cli.runs.final_test import EvalScope, EvaluableRun, TestLoader


@dataclass
class AttentionSums:
    """Running sums of the per-image attention scores (means in `summarise_attention`)."""

    images: int = 0
    zero_maps: int = 0
    on_object: float = 0.0
    chance: float = 0.0
    with_masks: int = 0
    saliency_cc: float = 0.0
    with_targets: int = 0


def gradcam_of(model: EvaluableRun, scope: EvalScope, x01: Tensor, labels: Tensor) -> Tensor:
    """Grad-CAM (B, H, W) of the true class's class-IL logit for test images `x01` (B, 3, H, W) in [0, 1]."""
    return grad_cam(scope.logits_fn(model), model.classifier, x01, labels).detach()


def attention_batches(model: EvaluableRun, scope: EvalScope, loader: TestLoader, rows: np.ndarray,
                      on_batch: Callable[[int], None] = lambda n: None) -> list[AttentionSums]:
    """Grad-CAM of test rows `rows` (sorted) in batches, scored against object masks and target maps; one
    `AttentionSums` per batch, in order."""
    parts = []
    for x01, labels, maps, _, batch_rows in loader.batches(rows):
        sums = AttentionSums()
        parts.append(sums)
        cam = gradcam_of(model, scope, x01, labels)  # (B, H, W)
        alive = cam.flatten(1).amax(dim=1) > 0  # (B,) images with some attention
        sums.images += len(labels)
        sums.zero_maps += int((~alive).sum())
        masks = loader.data.masks("test", batch_rows.numpy())
        if masks is not None and alive.any():
            _add_on_object(sums, cam[alive], torch.from_numpy(masks).to(cam.device)[alive])
        if loader.has_targets and alive.any():
            sums.saliency_cc += float(cc(cam[alive], maps[alive].float()).double().sum())
            sums.with_targets += int(alive.sum())
        on_batch(len(labels))
    return parts


def merge_attention(parts: Iterable[AttentionSums]) -> AttentionSums:
    """The sums of per-batch sums, folded in the order given."""
    total = AttentionSums()
    for part in parts:
        for f in fields(AttentionSums):
            setattr(total, f.name, getattr(total, f.name) + getattr(part, f.name))
    return total


def _add_on_object(sums: AttentionSums, cam: Tensor, masks: Tensor) -> None:
    sums.on_object += float(mass_inside(cam, masks).sum())
    sums.chance += float(masks.double().mean(dim=(1, 2)).sum())  # a uniform map's share: the object's area
    sums.with_masks += len(cam)


def summarise_attention(sums: AttentionSums) -> dict[str, float]:
    """attention_on_object (+ _chance) where masks exist, attention_saliency_cc where targets exist, counts."""
    out: dict[str, float] = {"gradcam_images": sums.images, "gradcam_zero_maps": sums.zero_maps}
    if sums.with_masks:
        out["attention_on_object"] = sums.on_object / sums.with_masks
        out["attention_on_object_chance"] = sums.chance / sums.with_masks
    if sums.with_targets:
        out["attention_saliency_cc"] = sums.saliency_cc / sums.with_targets
    return out
