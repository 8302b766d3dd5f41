"""Experience Replay (`er`; Chaudhry et al., 2019; Riemer et al., ICLR 2019): CE on the stream + CE on one draw.

As method.md section 4 states it: `CE(f(x), y) + CE(f(x_r), y_r)`, the mean over each batch, with the replay draw
(minibatch_size samples, reservoir buffer) taken whenever the buffer is not empty, from the first task on.
Mammoth's `er` instead concatenates stream and replay into one forward and one mean; the two forwards here are
needed by SER, whose stream and replay features come from the saliency branch in different modes.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ser_cli.continual.methods.base import LossTerms, Method
from ser_cli.continual.methods.registry import register_method


@register_method("er")
class ExperienceReplay(Method):
    """Stream CE plus replay CE."""

    def loss_terms(self, x: Tensor, labels: Tensor) -> LossTerms:
        """Stream CE and, when the buffer holds samples, replay CE."""
        yield "stream_ce", F.cross_entropy(self.stream_forward(x), labels)  # logits (B, n_classes)
        if self.can_replay():
            xr, draw = self.replay(self.settings.minibatch_size)  # (M, 3, H, W)
            yield "replay_ce", F.cross_entropy(self.learner.logits(xr, "replay"), draw["labels"])
