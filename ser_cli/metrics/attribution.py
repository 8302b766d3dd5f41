"""Where a plain classifier looks: input-gradient saliency (Simonyan et al., "Deep Inside Convolutional Networks",
ICLR Workshop 2014), |d logit_y / d x| maximised over colour channels. `ser evaluate` overlays it for runs without
SER, which have no saliency branch to show.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def input_gradient_saliency(logits_fn: Callable[[Tensor], Tensor], x01: Tensor, labels: Tensor) -> Tensor:
    """|d logit_y / d x| maximised over colour channels, (B, H, W), for images `x01` (B, 3, H, W) in [0, 1]."""
    x = x01.detach().requires_grad_(True)
    chosen = logits_fn(x).gather(1, labels[:, None]).sum()
    (grad,) = torch.autograd.grad(chosen, x)
    return grad.abs().amax(dim=1)  # (B, H, W)
