"""ER-ACE (`er_ace`; Caccia et al., ICLR 2022, "asymmetric cross-entropy"), as Mammoth's `er_ace` implements it.

From the second task on, the stream CE only sees the logits of classes present in the batch plus the classes that
may still come: every class from the largest label seen so far upwards (unless that label is the last class),
the other logits being set to the dtype's minimum, so new classes do not push down the logits of old classes; the
replay CE (weight 1) on one draw of `minibatch_size` is unmasked and also starts with the second task. "Seen" is
updated with the batch's labels before the mask is built. In a task-ordered class-incremental stream the largest
seen label belongs to the current task, so it stays unmasked even when absent from the batch (Mammoth's rule,
kept for fidelity to the paper's runs).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ser_cli.continual.methods.base import LossTerms, Method
from ser_cli.continual.methods.registry import register_method


def ace_mask(seen: Tensor, labels: Tensor) -> Tensor:
    """Classes whose logits the masked stream CE keeps.

    Args:
        seen: bool (K,), classes seen so far, this batch's labels included.
        labels: (B,) labels of the stream batch.

    Returns:
        bool (K,): present classes, plus classes >= the largest seen label when that label is not the last class.
    """
    k = seen.shape[0]
    classes = torch.arange(k, device=seen.device)  # (K,)
    present = torch.zeros_like(seen).index_fill_(0, labels, True)
    largest = torch.where(seen, classes, torch.full_like(classes, -1)).max()  # on the device: no sync
    future = (classes >= largest) & (largest < k - 1)
    return present | future


@register_method("er_ace")
class ErAce(Method):
    """Masked stream CE plus replay CE, both from the second task on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """As `Method`; also tracks the classes seen so far."""
        super().__init__(*args, **kwargs)
        self.seen = torch.zeros(self.settings.n_classes, dtype=torch.bool, device=self.learner.normalize.device)

    def loss_terms(self, x: Tensor, labels: Tensor) -> LossTerms:
        """Masked (from task 1) stream CE and replay CE (from task 1)."""
        logits = self.stream_forward(x)  # (B, n_classes)
        self.seen.index_fill_(0, labels, True)
        stream = logits
        if self.task > 0:
            keep = ace_mask(self.seen, labels)  # (n_classes,)
            stream = logits.masked_fill(~keep, torch.finfo(logits.dtype).min)
        yield "stream_ce", F.cross_entropy(stream, labels)
        if self.task > 0 and self.can_replay():
            xr, draw = self.replay(self.settings.minibatch_size)  # (M, 3, H, W)
            yield "replay_ce", F.cross_entropy(self.learner.logits(xr, "replay"), draw["labels"])

    def extra_state(self) -> dict[str, Any]:
        """The classes seen so far."""
        return {"seen": self.seen.cpu()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the classes seen so far."""
        self.seen.copy_(state["seen"])
