"""Saliency metrics against binary fixation masks, batched on the device: NSS, AUC-Judd, shuffled AUC.

Conventions and sources as in `ser_cli.metrics.saliency` (MIT benchmark code, Tübingen / pysaliency where they
differ; `convention="mit"|"tuebingen"`). Every function takes maps (B, H, W) (or (B, 1, H, W)) and fixation masks of
the same shape and returns one value per image, (B,), without a host synchronisation; an image without fixations
gives NaN.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from ser_cli.metrics.map_inputs import (
    as_maps,
    check_convention,
    count_dtype,
    is_constant,
    min_max,
    pair,
    ratio_or_nan,
)
from ser_cli.runtime.errors import UserError


def _rank_counts(values: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """For every element, the summed weight of elements of its row with a smaller and a smaller-or-equal value.

    Args:
        values: (B, N) scores.
        weights: (B, N) non-negative weights (counts) in the counting dtype.

    Returns:
        (below, at_or_below), both (B, N).
    """
    sorted_values, order = values.sort(-1)  # (B, N)
    cumulative = F.pad(weights.gather(-1, order).cumsum(-1), (1, 0))  # (B, N + 1), cumulative[i] = weight of first i
    lo = torch.searchsorted(sorted_values, values, right=False)  # first sorted position with value >= v
    hi = torch.searchsorted(sorted_values, values, right=True)  # first sorted position with value > v
    return cumulative.gather(-1, lo), cumulative.gather(-1, hi)


def _mann_whitney_auc(values: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
    """Exact ROC area: P(positive > negative) + 0.5 P(tie), positives and negatives weighted by counts.

    This is the trapezoid area of the ROC swept over every distinct value, which is what pysaliency's
    `general_roc` computes; ties between a positive and a negative get half credit (a diagonal ROC segment).
    """
    below, at_or_below = _rank_counts(values, negative)  # (B, N) negative weight under / up to each value
    credit = (positive * (below + 0.5 * (at_or_below - below))).sum(-1)  # (B,)
    return ratio_or_nan(credit, positive.sum(-1) * negative.sum(-1))


def _trapezoid_roc(fp: Tensor, tp: Tensor) -> Tensor:
    """ROC area by the trapezoid rule through (0, 0), the (B, L) points in sweep order, and (1, 1)."""
    zeros, ones = fp.new_zeros(fp.shape[0], 1), fp.new_ones(fp.shape[0], 1)
    x, y = torch.cat([zeros, fp, ones], -1), torch.cat([zeros, tp, ones], -1)  # (B, L + 2)
    return ((x[:, 1:] - x[:, :-1]) * (y[:, 1:] + y[:, :-1]) / 2).sum(-1)


def nss(pred: Tensor, fixations: Tensor, convention: str = "mit") -> Tensor:
    """Normalised scanpath saliency per image: mean of the z-scored map at the fixated pixels (higher is better).

    Conventions:
        "mit" (MIT `NSS.m`, also UNISAL's `torch.std`): the std has ddof = 1.
        "tuebingen" (pysaliency `NSS`): the std has ddof = 0 (about 1e-4 relative difference at 60x80).
    The fixation mask is boolean, so a location fixated several times counts once (the MIT rule; pysaliency counts
    every fixation). A constant map scores 0 (pysaliency's rule; MIT gives NaN); an image without fixations gets
    NaN. Differentiable in `pred`, with finite gradients in both degenerate cases.

    Args:
        pred: Predicted maps (B, H, W).
        fixations: Fixation masks (B, H, W); non-zero = fixated.
        convention: "mit" or "tuebingen".

    Returns:
        (B,) NSS values.
    """
    check_convention(convention)
    p, fix = pair(pred, fixations, ("pred", "fixations"))
    fix = (fix != 0).to(p.dtype)  # (B, N)
    ddof = 1 if convention == "mit" else 0
    centred = p - p.mean(-1, keepdim=True)  # (B, N)
    var = (centred * centred).sum(-1, keepdim=True) / max(p.shape[-1] - ddof, 1)  # (B, 1)
    flat = is_constant(p)  # (B,)
    z = centred * torch.rsqrt(torch.where(flat[:, None] | (var <= 0), 1, var))  # (B, N)
    n_fix = fix.sum(-1)  # (B,)
    score = (z * fix).sum(-1) / n_fix.clamp_min(1)
    score = torch.where(flat, torch.zeros_like(score), score)
    return torch.where(n_fix > 0, score, torch.full_like(score, float("nan")))


def auc_judd(pred: Tensor, fixations: Tensor, convention: str = "mit") -> Tensor:
    """AUC with fixated pixels as positives, per image (higher is better, 0.5 = chance).

    Conventions:
        "mit" (MIT `AUC_Judd.m`): negatives are the non-fixated pixels; ROC points only at the fixated values,
            joined by the trapezoid rule. MIT adds random jitter (rand / 1e7) to break ties; here the result is
            deterministic: the exact expectation of the MIT score over uniformly random tie-breaking, which is the
            MIT score itself whenever the map's values are distinct. The trapezoids between fixation thresholds make
            this score exceed the Mann-Whitney probability: a constant map scores 0.5 + 1 / (2 (N_fix + 1)), e.g.
            0.75 with a single fixation.
        "tuebingen" (pysaliency `AUC`, the new benchmark's "AUC"): negatives are all pixels (fixated included),
            every value is a threshold, ties get half credit; a constant map scores exactly 0.5.
    NaN for an image without fixations (or, for "mit", with every pixel fixated).

    Args:
        pred: Predicted maps (B, H, W).
        fixations: Fixation masks (B, H, W); non-zero = fixated (duplicates count once).
        convention: "mit" or "tuebingen".

    Returns:
        (B,) AUC values in the prediction's dtype.
    """
    check_convention(convention)
    p, fix = pair(pred, fixations, ("pred", "fixations"))
    p = p.detach().contiguous()
    positive = (fix != 0).to(count_dtype(p.device))  # (B, N)
    if convention == "tuebingen":
        return _mann_whitney_auc(p, positive, torch.ones_like(positive)).to(p.dtype)
    return _auc_judd_mit(p, positive).to(p.dtype)


def _auc_judd_mit(values: Tensor, positive: Tensor) -> Tensor:
    """Expected MIT AUC-Judd over random tie-breaking, in closed form.

    With the pixels ranked by value, the MIT curve is the step ROC (the Mann-Whitney area, where each non-fixated
    pixel adds the fraction of fixations ranked above it) plus half a step, 1 / (2 N_fix N_neg), for each non-fixated
    pixel ranked above the lowest fixation: the trapezoid joining two consecutive fixation thresholds cuts the
    corner of the step. Under random tie-breaking, a pixel tied with `t` fixations has t / 2 of them above it on
    average, and lies above the lowest fixation with probability 1 if some fixation has a smaller value, else
    t / (t + 1).
    """
    negative = 1 - positive  # (B, N)
    below, at_or_below = _rank_counts(values, positive)  # (B, N) fixations under / up to each value
    tied = at_or_below - below
    above = positive.sum(-1, keepdim=True) - at_or_below  # (B, N) fixations strictly above each value
    p_corner = torch.where(below > 0, torch.ones_like(tied), tied / (tied + 1))
    height = above + 0.5 * tied + 0.5 * p_corner  # (B, N) expected ROC height contributed by each negative
    return ratio_or_nan((negative * height).sum(-1), positive.sum(-1) * negative.sum(-1))


def other_image_fixations(fixations: Tensor) -> Tensor:
    """For each image of a batch, how often each pixel is fixated in the *other* images (the sAUC negatives).

    Args:
        fixations: Fixation masks (B, H, W); non-zero = fixated.

    Returns:
        (B, H, W) int64 counts; `> 0` is the MIT `otherMap` (union of the other images' fixations).
    """
    fix = (as_maps(fixations, "fixations") != 0).long()  # (B, H, W)
    return fix.sum(0, keepdim=True) - fix


def shuffled_auc(
    pred: Tensor,
    fixations: Tensor,
    other_fixations: Tensor,
    convention: str = "tuebingen",
    n_splits: int = 100,
    step: float = 0.1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Shuffled AUC: fixations of this image against fixations from other images (penalises centre bias).

    Conventions:
        "tuebingen" (pysaliency `AUC(nonfixations='shuffled')`, default): negatives are all the other-image
            fixation locations, weighted by `other_fixations` counts (duplicates kept, as pysaliency does), with an
            exact ROC over every value and half credit for ties. Deterministic; `n_splits`, `step`, `generator`
            are unused.
        "mit" (MIT `AUC_shuffled.m`): the map is min-max normalised; in each of `n_splits` splits,
            min(N_fix, |other|) negatives are drawn without replacement from the locations where
            `other_fixations > 0`; thresholds 0, step, 2 step, ... (step 0.1: 11 levels); the ROC is joined by
            trapezoids and the splits are averaged. The draws come from `generator` (its device is used for them),
            or from a fresh generator seeded with 0 on the prediction's device, so the score is deterministic.
    NaN for an image without fixations or without other-image fixations.

    Args:
        pred: Predicted maps (B, H, W).
        fixations: Fixation masks (B, H, W); non-zero = fixated.
        other_fixations: (B, H, W) fixation counts (or a mask) pooled from other images, e.g.
            `other_image_fixations(fixations)` or the fixations of M = 10 other images (Borji's protocol).
        convention: "tuebingen" or "mit".
        n_splits: Number of random negative draws ("mit").
        step: Threshold step on the min-max normalised map ("mit").
        generator: Source of the random draws ("mit").

    Returns:
        (B,) shuffled-AUC values in the prediction's dtype.
    """
    check_convention(convention)
    p, fix = pair(pred, fixations, ("pred", "fixations"))
    _, other = pair(pred, other_fixations, ("pred", "other_fixations"))
    p, counting = p.detach().contiguous(), count_dtype(p.device)
    positive = (fix != 0).to(counting)  # (B, N)
    other = other.to(counting).clamp_min(0)  # (B, N) counts; a bool mask becomes 0/1
    if convention == "tuebingen":
        return _mann_whitney_auc(p, positive, other).to(p.dtype)
    if n_splits < 1 or not 0 < step <= 1:
        raise UserError(f"shuffled_auc: need n_splits >= 1 and 0 < step <= 1, got n_splits={n_splits}, step={step}")
    if generator is None:
        generator = torch.Generator(device=p.device).manual_seed(0)
    return _shuffled_auc_mit(p, positive, other > 0, n_splits, step, generator).to(p.dtype)


def _shuffled_auc_mit(
    values: Tensor, positive: Tensor, candidates: Tensor, n_splits: int, step: float, generator: torch.Generator
) -> Tensor:
    """MIT `AUC_shuffled.m` with batched draws: splits loop, images never do."""
    v = min_max(values)  # (B, N) in [0, 1]
    # Thresholds above the largest value only add (0, 0) points, which add no area: a fixed ladder up to 1 is exact.
    n_levels = int(1 / step + 1e-9) + 1  # Matlab's 0:step:1
    levels = torch.arange(n_levels - 1, -1, -1, device=v.device, dtype=torch.float64) * step  # (L,) descending
    above = (v.to(torch.float64)[:, :, None] >= levels).to(positive.dtype)  # (B, N, L)
    n_pos = positive.sum(-1)  # (B,)
    k = torch.minimum(n_pos, candidates.sum(-1).to(positive.dtype))  # (B,) negatives per split
    tp = (positive[:, :, None] * above).sum(1) / n_pos.clamp_min(1)[:, None]  # (B, L)
    total = torch.zeros_like(n_pos)
    for _ in range(n_splits):
        keys = torch.rand(v.shape, generator=generator, device=generator.device).to(v.device)  # (B, N)
        keys = keys.masked_fill(~candidates, 2.0)  # non-candidates sort after every candidate
        rank = keys.argsort(-1).argsort(-1)  # (B, N) position of each pixel in a random order of the candidates
        chosen = (rank < k[:, None]).to(positive.dtype)  # (B, N) a uniform k-subset, without replacement
        fp = (chosen[:, :, None] * above).sum(1) / k.clamp_min(1)[:, None]  # (B, L)
        total = total + _trapezoid_roc(fp, tp)
    valid = (n_pos > 0) & (k > 0)  # no fixations, or nothing to shuffle in: undefined
    return torch.where(valid, total / n_splits, torch.full_like(total, float("nan")))
