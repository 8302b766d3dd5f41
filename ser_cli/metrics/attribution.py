"""Where a classifier looks: input-gradient saliency and Grad-CAM, and how much of an attribution map lies where.

- Input-gradient saliency (Simonyan et al., "Deep Inside Convolutional Networks", ICLR Workshop 2014):
  |d logit_y / d x| maximised over colour channels. `ser evaluate` overlays it for runs without SER, which have no
  saliency branch to show.
- Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization",
  ICCV 2017): A = the last stage's feature maps, alpha_k = spatial mean of d logit_y / d A^k, map =
  ReLU(sum_k alpha_k A^k), upsampled bilinearly to the image size. A is the map the classifier's head pools: the
  output of the last block's activation, ReLU(c_4) for a plain network and the SER modulation ReLU(c_4 * s_4)
  otherwise (the features the classifier really classifies; the pre-activation c_4 would let the saliency
  branch act only through channel weights, averaging away where it modulates). It is captured inside the run's
  own forward (`pooled_map_capture`), so Grad-CAM sees exactly the path `ser evaluate` scores and attacks.
- `mass_inside`: the share of a map's mass inside a region (Grad-CAM on the object's mask).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def input_gradient_saliency(logits_fn: Callable[[Tensor], Tensor], x01: Tensor, labels: Tensor) -> Tensor:
    """|d logit_y / d x| maximised over colour channels, (B, H, W), for images `x01` (B, 3, H, W) in [0, 1]."""
    x = x01.detach().requires_grad_(True)
    chosen = logits_fn(x).gather(1, labels[:, None]).sum()
    (grad,) = torch.autograd.grad(chosen, x)
    return grad.abs().amax(dim=1)  # (B, H, W)


@contextlib.contextmanager
def pooled_map_capture(backbone: nn.Module) -> Iterator[list[Tensor]]:
    """Record, on every forward of `backbone` inside the block, the feature map its head pools.

    A `Backbone` (`ser_cli.models.registry`) runs its blocks and replaces its activation of pre_i after block i by
    `modulate(i, pre_i)` when given one (SER's modulation); its head pools the last of these outputs. A forward
    pre-hook wraps that `modulate` argument (or the plain activation when there is none) so that the output at the last
    block is appended to the yielded list, still in the autograd graph. The hook is removed on exit.

    Args:
        backbone: A `Backbone` (blocks, `forward(x, modulate=None)`).

    Yields:
        The captured maps, (B, C, h, w) each, one per forward call.
    """
    captured: list[Tensor] = []
    last = len(backbone.blocks) - 1

    def wrap(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
        kwargs = dict(kwargs)
        if len(args) > 1:  # modulate given positionally
            args, kwargs["modulate"] = args[:1], args[1]
        inner = kwargs.get("modulate") or module.activate

        def modulate(i: int, pre: Tensor) -> Tensor:
            out = inner(i, pre)
            if i == last:
                captured.append(out)
            return out

        kwargs["modulate"] = modulate
        return args, kwargs

    handle = backbone.register_forward_pre_hook(wrap, with_kwargs=True)
    try:
        yield captured
    finally:
        handle.remove()


def grad_cam(logits_fn: Callable[[Tensor], Tensor], backbone: nn.Module, x01: Tensor, labels: Tensor) -> Tensor:
    """Grad-CAM of the logit of `labels` at the last stage of `backbone`, upsampled to the image size.

    Args:
        logits_fn: The scored function, images (B, 3, H, W) in [0, 1] -> logits; must run `backbone` once.
        backbone: The classifier backbone inside `logits_fn` (`pooled_map_capture`).
        x01: Images, (B, 3, H, W) in [0, 1].
        labels: The class whose logit is explained, (B,).

    Returns:
        (B, H, W) float32, non-negative; all zero where no channel has positive evidence.
    """
    x = x01.detach().requires_grad_(True)  # keeps the graph alive even if the weights do not require grad
    with pooled_map_capture(backbone) as captured:
        chosen = logits_fn(x).gather(1, labels[:, None]).sum()  # images are independent: one backward for all
    if len(captured) != 1:
        raise RuntimeError(f"logits_fn ran the backbone {len(captured)} times; Grad-CAM needs exactly one forward")
    (A,) = captured  # (B, C, h, w)
    (grad,) = torch.autograd.grad(chosen, A)
    weights = grad.float().mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1): alpha_k
    cam = F.relu((weights * A.detach().float()).sum(dim=1, keepdim=True))  # (B, 1, h, w)
    return F.interpolate(cam, size=x01.shape[-2:], mode="bilinear", align_corners=False)[:, 0]  # (B, H, W)


def mass_inside(maps: Tensor, regions: Tensor) -> Tensor:
    """Share of each map's mass inside its region, (B,); NaN for a map with no mass.

    Args:
        maps: Non-negative maps, (B, H, W).
        regions: Bool masks of the same shape.
    """
    maps = maps.double()
    total = maps.sum(dim=(1, 2))  # (B,)
    inside = (maps * regions.to(maps.dtype)).sum(dim=(1, 2))
    return torch.where(total > 0, inside / total.clamp_min(1e-300), torch.full_like(total, float("nan")))
