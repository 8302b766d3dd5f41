"""Saliency metrics and losses, batched on the device: KLD, CC, SIM, NSS, AUC-Judd, shuffled AUC, centre prior.

The definitions follow the MIT saliency benchmark code (Bylinskii et al., "What do different evaluation metrics tell
us about saliency models?", TPAMI 2019; `cvzoya/saliency/code_forMetrics`) and, where the two differ, the Tübingen
benchmark / pysaliency (Kümmerer et al., ECCV 2018): each function that depends on the choice takes
`convention="mit"|"tuebingen"` and its docstring says what changes. KLD is the MIT formula that SER (Bellitto et al.,
NeurIPS 2024) trains with, `sum Q log(eps + Q / (P + eps))` with both maps normalised to sum 1 (method.md section 4).
Every function takes maps (B, H, W) (or (B, 1, H, W)) and returns one value per image, (B,), computed without a host
synchronisation; degenerate inputs follow documented rules (a constant map gives CC 0, an empty fixation mask NaN).
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from ser_cli.runtime.errors import UserError

# Matlab's `eps` (= sys.float_info.epsilon): the regulariser of MIT `KLdiv.m`, pysaliency `MIT_KLDiv` and SER's KLD.
MIT_EPS = 2.220446049250313e-16
CONVENTIONS = ("mit", "tuebingen")


# ---------------------------------------------------------------------------------------------------------------
# Input handling and shared helpers
# ---------------------------------------------------------------------------------------------------------------


def _as_maps(x: Tensor, name: str) -> Tensor:
    """Maps as (B, H, W); a singleton channel (B, 1, H, W) is squeezed."""
    if x.dim() == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() != 3:
        raise UserError(f"saliency metric: `{name}` must have shape (B, H, W) or (B, 1, H, W), got {tuple(x.shape)}")
    return x


def _pair(a: Tensor, b: Tensor, names: tuple[str, str]) -> tuple[Tensor, Tensor]:
    """Both inputs as (B, H*W) flat maps, checked to have the same shape."""
    a, b = _as_maps(a, names[0]), _as_maps(b, names[1])
    if a.shape != b.shape:
        raise UserError(
            f"saliency metric: `{names[0]}` {tuple(a.shape)} and `{names[1]}` {tuple(b.shape)} must have the same shape"
        )
    return a.flatten(1), b.flatten(1)


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise UserError(f"saliency metric: convention must be one of {list(CONVENTIONS)}, got {convention!r}")


def _is_constant(x: Tensor) -> Tensor:
    """(B, N) -> (B,) True where every value of the map is equal (exactly, so no float-rounding false alarms)."""
    return x.amax(-1) == x.amin(-1)


def _sum_normalise(x: Tensor) -> Tensor:
    """(B, N) maps divided by their sums; an all-zero map becomes uniform (pysaliency's rule) instead of NaN."""
    total = x.sum(-1, keepdim=True)  # (B, 1)
    return torch.where(total > 0, x / torch.where(total > 0, total, 1), torch.full_like(x, 1 / x.shape[-1]))


def _min_max(x: Tensor) -> Tensor:
    """(B, N) maps rescaled to [0, 1]; a constant map is returned unchanged (MIT would give NaN)."""
    lo, hi = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (x - lo) / torch.where(span > 0, span, 1), x)


def _count_dtype(device: torch.device) -> torch.dtype:
    # Counts are summed over up to H*W*N_fix terms: float64 keeps them exact; MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def _ratio_or_nan(num: Tensor, den: Tensor) -> Tensor:
    """num / den, NaN where den == 0 (no positives or no negatives), without dividing by zero."""
    return torch.where(den > 0, num / torch.where(den > 0, den, 1), torch.full_like(num, float("nan")))


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
    return _ratio_or_nan(credit, positive.sum(-1) * negative.sum(-1))


def _trapezoid_roc(fp: Tensor, tp: Tensor) -> Tensor:
    """ROC area by the trapezoid rule through (0, 0), the (B, L) points in sweep order, and (1, 1)."""
    zeros, ones = fp.new_zeros(fp.shape[0], 1), fp.new_ones(fp.shape[0], 1)
    x, y = torch.cat([zeros, fp, ones], -1), torch.cat([zeros, tp, ones], -1)  # (B, L + 2)
    return ((x[:, 1:] - x[:, :-1]) * (y[:, 1:] + y[:, :-1]) / 2).sum(-1)


# ---------------------------------------------------------------------------------------------------------------
# Distribution-based metrics (continuous ground-truth map)
# ---------------------------------------------------------------------------------------------------------------


def kld(pred: Tensor, target: Tensor, eps: float = MIT_EPS) -> Tensor:
    """KL divergence KL(target || pred) per image, the MIT `KLdiv.m` / SER formula (lower is better).

    P = pred and Q = target are each normalised to sum 1, then `sum Q * log(eps + Q / (P + eps))`. The default eps is
    Matlab's `eps` = 2.220446049250313e-16, the value of MIT `KLdiv.m`, pysaliency `MIT_KLDiv` and SER's loss (the
    reference notes find SER uses `sys.float_info.epsilon`, not 1e-7). Pixels with Q = 0 contribute nothing; a pixel
    with Q > 0 where P = 0 costs Q * log(Q / eps), about 36 nats per unit of mass. An all-zero map counts as uniform
    (pysaliency's rule; MIT gives NaN). Differentiable in `pred`.

    Args:
        pred: Predicted maps (B, H, W), any non-negative scale.
        target: Ground-truth continuous maps (B, H, W), any non-negative scale.
        eps: The regulariser inside the log and the quotient.

    Returns:
        (B,) divergences in nats.
    """
    p, q = _pair(pred, target, ("pred", "target"))
    p, q = _sum_normalise(p), _sum_normalise(q)  # (B, N) each
    return (q * torch.log(eps + q / (p + eps))).sum(-1)


def cc(pred: Tensor, target: Tensor) -> Tensor:
    """Pearson linear correlation coefficient per image (MIT `CC.m`, pysaliency `CC`; higher is better).

    The MIT and pysaliency definitions agree (the ddof of the std cancels). Degenerate case: if either map is
    constant the correlation is undefined (MIT gives NaN); here it is 0, extending pysaliency's rule for a constant
    prediction to both maps. Differentiable in `pred`, with a finite gradient even for constant maps.

    Args:
        pred: Predicted maps (B, H, W).
        target: Ground-truth continuous maps (B, H, W).

    Returns:
        (B,) correlations in [-1, 1].
    """
    p, q = _pair(pred, target, ("pred", "target"))
    p, q = p - p.mean(-1, keepdim=True), q - q.mean(-1, keepdim=True)  # (B, N) centred
    var_p, var_q = (p * p).sum(-1), (q * q).sum(-1)  # (B,)
    degenerate = _is_constant(p) | _is_constant(q) | (var_p <= 0) | (var_q <= 0)
    # rsqrt of a safe value in the degenerate rows, so neither the forward nor the backward pass sees 0 / 0.
    scale = torch.rsqrt(torch.where(degenerate, 1, var_p)) * torch.rsqrt(torch.where(degenerate, 1, var_q))
    return torch.where(degenerate, torch.zeros_like(var_p), (p * q).sum(-1) * scale)


def sim(pred: Tensor, target: Tensor, convention: str = "mit") -> Tensor:
    """Similarity (histogram intersection) per image: sum over pixels of min(P, Q) (higher is better, 1 = identical).

    Conventions:
        "mit" (MIT `similarity.m`, SER's evaluation): each map is min-max normalised to [0, 1], then to sum 1.
        "tuebingen" (pysaliency `SIM`): each map is normalised to sum 1 directly (no min-max), so the same maps
        usually score higher (0.786 vs 0.697 on the reference notes' example).
    A constant map is not min-max normalised (MIT would give NaN) and, like an all-zero map (pysaliency's rule;
    MIT scores an all-zero map 0), counts as uniform.

    Args:
        pred: Predicted maps (B, H, W), non-negative.
        target: Ground-truth continuous maps (B, H, W), non-negative.
        convention: "mit" or "tuebingen".

    Returns:
        (B,) similarities in [0, 1].
    """
    _check_convention(convention)
    p, q = _pair(pred, target, ("pred", "target"))
    if convention == "mit":
        p, q = _min_max(p), _min_max(q)
    return torch.minimum(_sum_normalise(p), _sum_normalise(q)).sum(-1)


# ---------------------------------------------------------------------------------------------------------------
# Point-based metrics (binary fixation masks)
# ---------------------------------------------------------------------------------------------------------------


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
    _check_convention(convention)
    p, fix = _pair(pred, fixations, ("pred", "fixations"))
    fix = (fix != 0).to(p.dtype)  # (B, N)
    ddof = 1 if convention == "mit" else 0
    centred = p - p.mean(-1, keepdim=True)  # (B, N)
    var = (centred * centred).sum(-1, keepdim=True) / max(p.shape[-1] - ddof, 1)  # (B, 1)
    flat = _is_constant(p)  # (B,)
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
    _check_convention(convention)
    p, fix = _pair(pred, fixations, ("pred", "fixations"))
    p = p.detach().contiguous()
    positive = (fix != 0).to(_count_dtype(p.device))  # (B, N)
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
    return _ratio_or_nan((negative * height).sum(-1), positive.sum(-1) * negative.sum(-1))


def other_image_fixations(fixations: Tensor) -> Tensor:
    """For each image of a batch, how often each pixel is fixated in the *other* images (the sAUC negatives).

    Args:
        fixations: Fixation masks (B, H, W); non-zero = fixated.

    Returns:
        (B, H, W) int64 counts; `> 0` is the MIT `otherMap` (union of the other images' fixations).
    """
    fix = (_as_maps(fixations, "fixations") != 0).long()  # (B, H, W)
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
    _check_convention(convention)
    p, fix = _pair(pred, fixations, ("pred", "fixations"))
    _, other = _pair(pred, other_fixations, ("pred", "other_fixations"))
    p, count_dtype = p.detach().contiguous(), _count_dtype(p.device)
    positive = (fix != 0).to(count_dtype)  # (B, N)
    other = other.to(count_dtype).clamp_min(0)  # (B, N) counts; a bool mask becomes 0/1
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
    v = _min_max(values)  # (B, N) in [0, 1]
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


# ---------------------------------------------------------------------------------------------------------------
# Baseline, losses, convenience
# ---------------------------------------------------------------------------------------------------------------


def center_bias_map(
    h: int,
    w: int,
    sigma_frac: float = 0.25,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """A Gaussian centre prior, the classic baseline every trained saliency model must beat.

    The Gaussian is centred on the image with standard deviations `sigma_frac * h` (rows) and `sigma_frac * w`
    (columns), so it stretches with the aspect ratio, and is normalised to sum 1 (a density over pixels).

    Args:
        h: Height in pixels.
        w: Width in pixels.
        sigma_frac: Standard deviation as a fraction of each side.
        device: Device of the result.
        dtype: Floating dtype of the result.

    Returns:
        (H, W) map summing to 1.
    """
    if h < 1 or w < 1 or sigma_frac <= 0:
        raise UserError(
            f"center_bias_map: need h, w >= 1 and sigma_frac > 0, got h={h}, w={w}, sigma_frac={sigma_frac}"
        )
    ys = (torch.arange(h, device=device, dtype=dtype) - (h - 1) / 2) / (sigma_frac * h)  # (H,)
    xs = (torch.arange(w, device=device, dtype=dtype) - (w - 1) / 2) / (sigma_frac * w)  # (W,)
    g = torch.exp(-0.5 * (ys[:, None] ** 2 + xs[None, :] ** 2))  # (H, W)
    return g / g.sum()


def kld_loss(pred: Tensor, target: Tensor, eps: float = MIT_EPS) -> Tensor:
    """SER's saliency loss: `kld(pred, target, eps)` averaged over the batch (a scalar, differentiable)."""
    return kld(pred, target, eps).mean()


def saliency_loss(
    pred: Tensor,
    target: Tensor,
    fixations: Tensor | None = None,
    w_cc: float = 0.0,
    w_nss: float = 0.0,
    eps: float = MIT_EPS,
) -> Tensor:
    """KLD - w_cc * CC - w_nss * NSS, averaged over the batch (UNISAL trains with w_cc = w_nss = 0.1; SER with 0, 0).

    NSS uses the "mit" convention (ddof 1, as UNISAL); an image without fixations contributes 0 to the NSS term.

    Args:
        pred: Predicted maps (B, H, W).
        target: Ground-truth continuous maps (B, H, W).
        fixations: Fixation masks (B, H, W); required when w_nss != 0.
        w_cc: Weight of the CC reward.
        w_nss: Weight of the NSS reward.
        eps: KLD regulariser.

    Returns:
        Scalar loss.
    """
    loss = kld(pred, target, eps)  # (B,)
    if w_cc != 0:
        loss = loss - w_cc * cc(pred, target)
    if w_nss != 0:
        if fixations is None:
            raise UserError(f"saliency_loss: w_nss={w_nss} needs fixation masks; pass `fixations` or set w_nss to 0")
        per_image = nss(pred, fixations)  # (B,), NaN where an image has no fixations
        loss = loss - w_nss * torch.where(torch.isnan(per_image), torch.zeros_like(per_image), per_image)
    return loss.mean()


@torch.no_grad()
def saliency_scores(pred: Tensor, target: Tensor, fixations: Tensor | None = None) -> dict[str, Tensor]:
    """Per-image evaluation scores with the default conventions (MIT for SIM, NSS and AUC-Judd).

    Args:
        pred: Predicted maps (B, H, W).
        target: Ground-truth continuous maps (B, H, W).
        fixations: Fixation masks (B, H, W), or None for the distribution-based metrics only.

    Returns:
        {"kld", "cc", "sim"} (+ {"nss", "auc_judd"} with fixations), each (B,) on the prediction's device.
    """
    scores = {"kld": kld(pred, target), "cc": cc(pred, target), "sim": sim(pred, target)}
    if fixations is not None:
        scores["nss"] = nss(pred, fixations)
        scores["auc_judd"] = auc_judd(pred, fixations)
    return scores
