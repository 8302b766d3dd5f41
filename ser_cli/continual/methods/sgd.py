"""Fine-tuning (`sgd`): cross-entropy on the stream only, no replay; the lower bound of continual learning."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ser_cli.continual.methods.base import LossTerms, Method
from ser_cli.continual.methods.registry import register_method


@register_method("sgd")
class FineTune(Method):
    """CE(f(x), y) on each stream batch; forgets past tasks."""

    uses_buffer = False

    def loss_terms(self, x: Tensor, labels: Tensor) -> LossTerms:
        """Stream cross-entropy."""
        yield "stream_ce", F.cross_entropy(self.stream_forward(x), labels)
