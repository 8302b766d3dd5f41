"""The `Method` skeleton: one training step shared by every continual-learning method, with named hooks.

In the style of Avalanche's strategy templates, a method is a small object with `before_task`, `after_task` and
`observe`; `observe` is the same for every method (SER, Bellitto et al., NeurIPS 2024, method.md section 4):
1. the learner's saliency step on the stream batch (a no-op without SER);
2.-3. the method's loss terms on the stream and on replay draws (`loss_terms`, the only part a method writes);
4. the gradient of their sum and one SGD step of the classifier (and MNP) parameters;
5. the stream batch offered to the reservoir buffer (with its logits for DER / DER++).
The classifier optimiser is SGD (paper: lr 0.01, no momentum), built once and never reset between tasks.

Step 4 backpropagates each term as soon as the method yields it, so only one term's graph (one forward of a
batch) is alive at a time instead of all of them (DER++: the stream batch and two replay draws, so about a third
of the activation memory); the terms' parameter gradients are then summed in the order one backward of their sum
adds them (`sum_term_gradients`), so the step is bit-identical to that backward.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from ser_cli.continual.buffer import ReservoirBuffer
from ser_cli.continual.learner import Learner
from ser_cli.continual.settings import TrainSettings
from ser_cli.runtime.device import fused_optimizer_option


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


LossTerms = Iterator[tuple[str, Tensor]]  # (name, weighted scalar loss), each computed just before it is yielded


@dataclass
class StepLosses:
    """Loss terms of one step with the stream logits: what CoPE's `losses` returns (its PPP loss couples the stream
    and replay samples in one term, so CoPE keeps its own `observe`).

    Attributes:
        terms: Named loss terms, already weighted; the classifier minimises their sum.
        stream_logits: The stream batch's logits (B, n_classes), stored in the buffer by DER / DER++.
    """

    terms: dict[str, Tensor]
    stream_logits: Tensor


class Method:
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
        params = list(learner.parameters())
        self.optimizer = torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum,
                                         weight_decay=settings.weight_decay, **fused_optimizer_option(params))
        self.task = 0
        self._stream_logits: Tensor | None = None  # this step's, set by `stream_forward`

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
        self._stream_logits = None
        terms = self._backward_each(self.loss_terms(x, batch.labels))
        self.optimizer.step()
        self.learner.forget_stream_taps()
        self.remember(batch, self._stream_logits)
        return {**terms, "loss": sum(terms.values()), **saliency}

    def loss_terms(self, x: Tensor, labels: Tensor) -> LossTerms:
        """The method's weighted loss terms for a normalised stream batch `x` (B, 3, H, W) with `labels` (B,).

        A generator: compute each term's forward just before yielding it (the skeleton backpropagates it before
        asking for the next one), the stream batch's through `stream_forward`. Every method that uses the shared
        `observe` writes this.
        """
        raise NotImplementedError(f"{type(self).__name__} has its own observe")

    def stream_forward(self, x: Tensor) -> Tensor:
        """The stream batch's logits (B, n_classes); their detached copy is what `remember` stores (DER, DER++)."""
        logits = self.learner.logits(x, "stream")
        self._stream_logits = logits.detach()
        # The skeleton forwards the stream batch once a step, so its saliency taps can go now rather than at the
        # end of the step: autograd holds what this term's backward needs of them until that backward, and the
        # replay terms' backward no longer holds them too (0.65 GB at 288x384).
        self.learner.forget_stream_taps()
        return logits

    def _backward_each(self, terms: LossTerms) -> dict[str, Tensor]:
        """Backpropagate each term as it comes (its forward under autocast, its backward outside), then leave the
        sum of the terms' gradients in `.grad`; returns the detached terms."""
        params = self.learner.parameters()
        values: dict[str, Tensor] = {}
        per_term: list[list[Tensor | None]] = []
        while True:
            with self.learner.autocast():
                item = next(terms, None)
            if item is None:
                break
            name, loss = item
            loss.backward()
            values[name] = loss.detach()
            per_term.append([p.grad for p in params])
            for p in params:
                p.grad = None
        for p, grads in zip(params, zip(*per_term, strict=True), strict=True):
            p.grad = sum_term_gradients(grads)
        return values

    def replay(self, n: int) -> tuple[Tensor, dict[str, Tensor]]:
        """One draw of `n` buffer samples: their normalised images (n, 3, H, W) and stored fields."""
        draw = self.buffer.sample(n)
        return self.learner.normalize(draw["images"]), draw

    def can_replay(self) -> bool:
        """Whether the buffer holds anything to draw."""
        return self.buffer is not None and len(self.buffer) > 0

    def remember(self, batch: StreamBatch, stream_logits: Tensor | None) -> None:
        """Offer the stream batch to the buffer (step 5)."""
        if self.buffer is None:
            return
        logits = stream_logits if self.stores_logits else None
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


def sum_term_gradients(grads: tuple[Tensor | None, ...]) -> Tensor | None:
    """One parameter's gradient from its per-term gradients (None: the term does not reach it), added from the last
    term to the first: one backward of the terms' sum runs the branch built last first and adds each branch's
    contribution as it arrives, so this is the float sum that backward leaves, bit for bit (tests/test_methods.py)."""
    total = None
    for g in reversed(grads):
        if g is not None:
            total = g if total is None else total + g
    return total
