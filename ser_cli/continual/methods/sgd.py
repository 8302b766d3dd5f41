"""Fine-tuning (`sgd`): cross-entropy on the stream only, no replay; the lower bound of continual learning."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ser_cli.continual.methods.base import Method, StepLosses
from ser_cli.continual.methods.registry import register_method


@register_method("sgd")
class FineTune(Method):
    """CE(f(x), y) on each stream batch; forgets past tasks."""

    uses_buffer = False

    def losses(self, x: Tensor, labels: Tensor) -> StepLosses:
        """Stream cross-entropy."""
        logits = self.learner.logits(x, "stream")  # (B, n_classes)
        return StepLosses({"stream_ce": F.cross_entropy(logits, labels)}, logits)
