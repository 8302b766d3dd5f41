"""DER++ (`derpp`; Buzzega et al., NeurIPS 2020), the method SER is shown on first (Bellitto et al., NeurIPS 2024).

`CE(f(x), y) + alpha * MSE(f(x1), z1) + beta * CE(f(x2), y2)` with two independent uniform draws (x1, z1) and
(x2, y2) of `minibatch_size` samples each; the buffer stores images, labels and the stream logits f(x) computed in
the step the sample was seen (before that step's update), as Mammoth's `derpp`. Paper: alpha 0.1, beta 0.5. The
MSE is the mean over samples and classes. Replay starts as soon as the buffer holds a sample.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ser_cli.continual.methods.base import Method, StepLosses
from ser_cli.continual.methods.registry import register_method


def derpp_terms(
    logits: Tensor,
    labels: Tensor,
    logits_1: Tensor,
    stored_logits_1: Tensor,
    logits_2: Tensor,
    labels_2: Tensor,
    alpha: float,
    beta: float,
) -> dict[str, Tensor]:
    """The three weighted DER++ terms.

    Args:
        logits: Stream logits f(x), (B, K).
        labels: Stream labels y, (B,).
        logits_1: f(x1) for the first draw, (M, K).
        stored_logits_1: z1, the logits stored with the first draw, (M, K).
        logits_2: f(x2) for the second draw, (M, K).
        labels_2: y2, the labels of the second draw, (M,).
        alpha: Weight of the logit MSE.
        beta: Weight of the replay CE.

    Returns:
        {"stream_ce": CE(f(x), y), "replay_mse": alpha * MSE(f(x1), z1), "replay_ce": beta * CE(f(x2), y2)}.
    """
    return {
        "stream_ce": F.cross_entropy(logits, labels),
        "replay_mse": alpha * F.mse_loss(logits_1.float(), stored_logits_1.float()),
        "replay_ce": beta * F.cross_entropy(logits_2, labels_2),
    }


@register_method("derpp")
class DarkExperienceReplayPlusPlus(Method):
    """Stream CE, logit distillation on one draw, label replay on another."""

    stores_logits = True

    def losses(self, x: Tensor, labels: Tensor) -> StepLosses:
        """The DER++ terms; only the stream CE while the buffer is empty."""
        logits = self.learner.logits(x, "stream")  # (B, n_classes)
        if not self.can_replay():
            return StepLosses({"stream_ce": F.cross_entropy(logits, labels)}, logits)
        m = self.settings.minibatch_size
        x1, draw_1 = self.replay(m)  # (M, 3, H, W)
        logits_1 = self.learner.logits(x1, "replay")
        x2, draw_2 = self.replay(m)  # an independent draw
        logits_2 = self.learner.logits(x2, "replay")
        alpha, beta = self.settings.alpha, self.settings.beta
        terms = derpp_terms(logits, labels, logits_1, draw_1["logits"], logits_2, draw_2["labels"], alpha, beta)
        return StepLosses(terms, logits)
