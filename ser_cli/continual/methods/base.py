"""The `Method` skeleton: one training step shared by every continual-learning method, with named hooks.

In the style of Avalanche's strategy templates, a method is a small object with `before_task`, `after_task` and
`observe`; `observe` is the same for every method (SER, Bellitto et al., NeurIPS 2024, method.md section 4):
1. the learner's saliency step on the stream batch (a no-op without SER);
2.-3. the method's losses on the stream and on replay draws (`losses`, the only part a method writes);
4. one backward of their sum and one SGD step of the classifier (and MNP) parameters;
5. the stream batch offered to the reservoir buffer (with its logits for DER / DER++).
The classifier optimiser is SGD (paper: lr 0.01, no momentum), built once and never reset between tasks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from ser_cli.continual.buffer import ReservoirBuffer
from ser_cli.continual.learner import Learner
from ser_cli.continual.settings import TrainSettings


@dataclass
class StreamBatch:
    """One stream batch on the training device.

    Attributes:
        images: uint8 (B, 3, H, W).
        maps: Target saliency maps (B, H, W), each summing to 1 (used only with SER).
        labels: int64 (B,).
    """

    images: Tensor
    maps: Tensor
    labels: Tensor


@dataclass
class StepLosses:
    """What a method's `losses` returns.

    Attributes:
        terms: Named loss terms, already weighted; the classifier minimises their sum.
        stream_logits: The stream batch's logits (B, n_classes), stored in the buffer by DER / DER++.
    """

    terms: dict[str, Tensor]
    stream_logits: Tensor


class Method(ABC):
    """A continual-learning method: hooks around one shared training step.

    Class attributes:
        name: Registry name.
        uses_buffer: Whether the method replays (a buffer is built for it).
        buffer_class: How the buffer is filled: `ReservoirBuffer` (reservoir sampling) or a subclass of it.
        stores_logits: Whether the buffer keeps the stream logits (DER, DER++).
        schedule: "tasks" to see the tasks one after the other, "joint" to see all tasks' data at once.
    """

    name: ClassVar[str] = ""
    uses_buffer: ClassVar[bool] = True
    buffer_class: ClassVar[type[ReservoirBuffer]] = ReservoirBuffer
    stores_logits: ClassVar[bool] = False
    schedule: ClassVar[Literal["tasks", "joint"]] = "tasks"

    def __init__(self, learner: Learner, settings: TrainSettings, buffer: ReservoirBuffer | None) -> None:
        """Build the classifier optimiser.

        Args:
            learner: The networks to train.
            settings: Hyperparameters (lr, momentum, weight_decay, minibatch_size, alpha, beta, ...).
            buffer: The replay buffer, or None for methods without replay.
        """
        self.learner = learner
        self.settings = settings
        self.buffer = buffer
        self.optimizer = torch.optim.SGD(
            learner.parameters(), lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
        )
        self.task = 0

    def before_task(self, task: int) -> None:
        """Hook called before the first step of `task`."""
        self.task = task

    def after_task(self, task: int) -> None:  # noqa: B027  (a hook: nothing to do by default)
        """Hook called after the last step of `task`, before evaluation."""

    def observe(self, batch: StreamBatch) -> dict[str, Tensor]:
        """One training step on a stream batch.

        Returns:
            Detached scalar losses: the method's terms, their sum `loss`, and `saliency_kld` with SER.
        """
        x = self.learner.normalize(batch.images)  # (B, 3, H, W)
        saliency = self.learner.saliency_step(x, batch.maps)
        self.optimizer.zero_grad(set_to_none=True)
        with self.learner.autocast():
            out = self.losses(x, batch.labels)
        total = sum(out.terms.values())
        total.backward()
        self.optimizer.step()
        self.learner.end_step()
        self.remember(batch, out.stream_logits)
        return {**{k: v.detach() for k, v in out.terms.items()}, "loss": total.detach(), **saliency}

    @abstractmethod
    def losses(self, x: Tensor, labels: Tensor) -> StepLosses:
        """The method's loss terms for a normalised stream batch `x` (B, 3, H, W) with `labels` (B,)."""

    def replay(self, n: int) -> tuple[Tensor, dict[str, Tensor]]:
        """One draw of `n` buffer samples: their normalised images (n, 3, H, W) and stored fields."""
        draw = self.buffer.sample(n)
        return self.learner.normalize(draw["images"]), draw

    def can_replay(self) -> bool:
        """Whether the buffer holds anything to draw."""
        return self.buffer is not None and len(self.buffer) > 0

    def remember(self, batch: StreamBatch, stream_logits: Tensor) -> None:
        """Offer the stream batch to the buffer (step 5)."""
        if self.buffer is None:
            return
        logits = stream_logits.detach() if self.stores_logits else None
        self.buffer.add(batch.images, batch.labels, self.task, logits=logits)

    def state_dict(self) -> dict[str, Any]:
        """Optimiser, buffer, current task and the method's own state."""
        return {
            "task": self.task,
            "optimizer": self.optimizer.state_dict(),
            "buffer": self.buffer.state_dict() if self.buffer is not None else None,
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict()` of the same method."""
        self.task = state["task"]
        self.optimizer.load_state_dict(state["optimizer"])
        if self.buffer is not None:
            self.buffer.load_state_dict(state["buffer"])
        self.load_extra_state(state["extra"])

    def extra_state(self) -> dict[str, Any]:
        """State specific to a method (e.g. ER-ACE's seen classes); empty by default."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: B027  (no extra state by default)
        """Restore `extra_state()`."""
