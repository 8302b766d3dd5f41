"""Dark Experience Replay (`der`; Buzzega et al., NeurIPS 2020): CE on the stream + alpha * MSE on stored logits.

`CE(f(x), y) + alpha * MSE(f(x_r), z_r)`, where z_r are the logits the network produced for x_r when it was a
stream sample (stored in the buffer); the MSE is the mean over samples and classes, as Mammoth's `der`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ser_cli.continual.methods.base import LossTerms, Method
from ser_cli.continual.methods.registry import register_method


@register_method("der")
class DarkExperienceReplay(Method):
    """Stream CE plus logit distillation on one replay draw."""

    stores_logits = True

    def loss_terms(self, x: Tensor, labels: Tensor) -> LossTerms:
        """Stream CE and, when the buffer holds samples, alpha * MSE to the stored logits."""
        yield "stream_ce", F.cross_entropy(self.stream_forward(x), labels)  # logits (B, n_classes)
        if self.can_replay():
            xr, draw = self.replay(self.settings.minibatch_size)  # (M, 3, H, W)
            replay_logits = self.learner.logits(xr, "replay")  # (M, n_classes)
            yield "replay_mse", self.settings.alpha * F.mse_loss(replay_logits.float(), draw["logits"])
