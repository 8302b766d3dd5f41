"""DER++ (`derpp`; Buzzega et al., NeurIPS 2020), the method SER is shown on first (Bellitto et al., NeurIPS 2024).

`CE(f(x), y) + alpha * MSE(f(x1), z1) + beta * CE(f(x2), y2)` with two independent uniform draws (x1, z1) and
(x2, y2) of `minibatch_size` samples each; the buffer stores images, labels and the stream logits f(x) computed in
the step the sample was seen (before that step's update), as Mammoth's `derpp`. Paper: alpha 0.1, beta 0.5. The
MSE is the mean over samples and classes. Replay starts as soon as the buffer holds a sample.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ser_cli.continual.methods.base import LossTerms, Method
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
        "replay_mse": logit_mse(logits_1, stored_logits_1, alpha),
        "replay_ce": label_ce(logits_2, labels_2, beta),
    }


def logit_mse(logits: Tensor, stored_logits: Tensor, alpha: float) -> Tensor:
    """alpha * MSE(f(x1), z1), in float32 (the stored logits may come from a bf16 step)."""
    return alpha * F.mse_loss(logits.float(), stored_logits.float())


def label_ce(logits: Tensor, labels: Tensor, beta: float) -> Tensor:
    """beta * CE(f(x2), y2)."""
    return beta * F.cross_entropy(logits, labels)


@register_method("derpp")
class DarkExperienceReplayPlusPlus(Method):
    """Stream CE, logit distillation on one draw, label replay on another."""

    stores_logits = True

    def loss_terms(self, x: Tensor, labels: Tensor) -> LossTerms:
        """The DER++ terms, one forward each; only the stream CE while the buffer is empty."""
        yield "stream_ce", F.cross_entropy(self.stream_forward(x), labels)  # logits (B, n_classes)
        if not self.can_replay():
            return
        m = self.settings.minibatch_size
        x1, draw_1 = self.replay(m)  # (M, 3, H, W)
        yield "replay_mse", logit_mse(self.learner.logits(x1, "replay"), draw_1["logits"], self.settings.alpha)
        x2, draw_2 = self.replay(m)  # an independent draw
        yield "replay_ce", label_ce(self.learner.logits(x2, "replay"), draw_2["labels"], self.settings.beta)
