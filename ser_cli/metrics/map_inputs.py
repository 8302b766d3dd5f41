"""What every saliency metric shares: input checks (maps as (B, H, W)), the conventions, normalisations.

The metrics live in `ser_cli.metrics.saliency` (maps against maps, losses) and `ser_cli.metrics.fixation_metrics`
(maps against fixation masks); both take their inputs through these functions, so shapes, degenerate maps and the
MIT / Tübingen convention names are handled one way.
"""

import torch
from torch import Tensor

from ser_cli.runtime.errors import UserError

# Matlab's `eps` (= sys.float_info.epsilon): the regulariser of MIT `KLdiv.m`, pysaliency `MIT_KLDiv` and SER's KLD.
MIT_EPS = 2.220446049250313e-16
CONVENTIONS = ("mit", "tuebingen")


def as_maps(x: Tensor, name: str) -> Tensor:
    """Maps as (B, H, W); a singleton channel (B, 1, H, W) is squeezed."""
    if x.dim() == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() != 3:
        raise UserError(f"saliency metric: `{name}` must have shape (B, H, W) or (B, 1, H, W), got {tuple(x.shape)}")
    return x


def pair(a: Tensor, b: Tensor, names: tuple[str, str]) -> tuple[Tensor, Tensor]:
    """Both inputs as (B, H*W) flat maps, checked to have the same shape."""
    a, b = as_maps(a, names[0]), as_maps(b, names[1])
    if a.shape != b.shape:
        raise UserError(
            f"saliency metric: `{names[0]}` {tuple(a.shape)} and `{names[1]}` {tuple(b.shape)} must have the same shape"
        )
    return a.flatten(1), b.flatten(1)


def check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise UserError(f"saliency metric: convention must be one of {list(CONVENTIONS)}, got {convention!r}")


def is_constant(x: Tensor) -> Tensor:
    """(B, N) -> (B,) True where every value of the map is equal (exactly, so no float-rounding false alarms)."""
    return x.amax(-1) == x.amin(-1)


def sum_normalise(x: Tensor) -> Tensor:
    """(B, N) maps divided by their sums; an all-zero map becomes uniform (pysaliency's rule) instead of NaN."""
    total = x.sum(-1, keepdim=True)  # (B, 1)
    return torch.where(total > 0, x / torch.where(total > 0, total, 1), torch.full_like(x, 1 / x.shape[-1]))


def min_max(x: Tensor) -> Tensor:
    """(B, N) maps rescaled to [0, 1]; a constant map is returned unchanged (MIT would give NaN)."""
    lo, hi = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (x - lo) / torch.where(span > 0, span, 1), x)


def count_dtype(device: torch.device) -> torch.dtype:
    # Counts are summed over up to H*W*N_fix terms: float64 keeps them exact; MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def ratio_or_nan(num: Tensor, den: Tensor) -> Tensor:
    """num / den, NaN where den == 0 (no positives or no negatives), without dividing by zero."""
    return torch.where(den > 0, num / torch.where(den > 0, den, 1), torch.full_like(num, float("nan")))
