"""Joint training (`joint`): the offline upper bound, trained on every task's data at once.

The step is fine-tuning's (stream cross-entropy, no replay); what differs is the schedule: `schedule = "joint"`
tells the training loop to replace the task sequence by ONE phase whose loader is the union of all tasks'
training sets shuffled together (`TaskStream.train_loader(tasks=[0, ..., T-1], epoch)`), run for `epochs` passes,
and to evaluate once at the end: only the last row of the accuracy matrices is filled (the earlier rows stay NaN).
With SER the saliency branch trains on the same shuffled batches.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ser_cli.continual.methods.base import LossTerms, Method
from ser_cli.continual.methods.registry import register_method


@register_method("joint")
class Joint(Method):
    """CE(f(x), y) on batches drawn from all tasks at once."""

    uses_buffer = False
    schedule = "joint"

    def loss_terms(self, x: Tensor, labels: Tensor) -> LossTerms:
        """Cross-entropy on a batch of the joint stream."""
        yield "stream_ce", F.cross_entropy(self.stream_forward(x), labels)
