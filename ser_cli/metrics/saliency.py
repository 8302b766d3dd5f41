"""Saliency metrics and losses, batched on the device: KLD, CC, SIM, centre prior, the training losses.

The definitions follow the MIT saliency benchmark code (Bylinskii et al., "What do different evaluation metrics tell
us about saliency models?", TPAMI 2019; `cvzoya/saliency/code_forMetrics`) and, where the two differ, the Tübingen
benchmark / pysaliency (Kümmerer et al., ECCV 2018): each function that depends on the choice takes
`convention="mit"|"tuebingen"` and its docstring says what changes. KLD is the MIT formula that SER (Bellitto et al.,
NeurIPS 2024) trains with, `sum Q log(eps + Q / (P + eps))` with both maps normalised to sum 1 (method.md section 4).
Every function takes maps (B, H, W) (or (B, 1, H, W)) and returns one value per image, (B,), computed without a host
synchronisation; degenerate inputs follow documented rules (a constant map gives CC 0, an empty fixation mask NaN).
The metrics against fixation masks (NSS, AUC-Judd, shuffled AUC) are in `ser_cli.metrics.fixation_metrics` and
imported here, so `ser_cli.metrics.saliency` offers every metric.
"""

import torch
from torch import Tensor

from ser_cli.metrics.fixation_metrics import auc_judd, nss, other_image_fixations, shuffled_auc
from ser_cli.metrics.map_inputs import CONVENTIONS, MIT_EPS, check_convention, is_constant, min_max, pair, sum_normalise
from ser_cli.runtime.errors import UserError

__all__ = ["CONVENTIONS", "MIT_EPS", "SCORE_NAMES", "auc_judd", "cc", "center_bias_map", "kld", "kld_loss", "nss",
           "other_image_fixations", "saliency_loss", "saliency_scores", "shuffled_auc", "sim"]


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
    p, q = pair(pred, target, ("pred", "target"))
    p, q = sum_normalise(p), sum_normalise(q)  # (B, N) each
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
    p, q = pair(pred, target, ("pred", "target"))
    p, q = p - p.mean(-1, keepdim=True), q - q.mean(-1, keepdim=True)  # (B, N) centred
    var_p, var_q = (p * p).sum(-1), (q * q).sum(-1)  # (B,)
    degenerate = is_constant(p) | is_constant(q) | (var_p <= 0) | (var_q <= 0)
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
    check_convention(convention)
    p, q = pair(pred, target, ("pred", "target"))
    if convention == "mit":
        p, q = min_max(p), min_max(q)
    return torch.minimum(sum_normalise(p), sum_normalise(q)).sum(-1)


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


# Every key `saliency_scores` may return, in the order every table, log and metrics file shows them.
SCORE_NAMES = ("kld", "cc", "sim", "nss", "auc_judd")


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
