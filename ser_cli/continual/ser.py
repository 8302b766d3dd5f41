"""The saliency branch of SER (Bellitto et al., NeurIPS 2024): the saliency network, its optimiser and its step.

Step 1 of every training step (method.md section 4): the saliency net, in train mode, predicts maps for the stream
batch; the loss is KL(target || prediction) averaged over the batch (`ser_cli.metrics.saliency.kld_loss`); its own
SGD optimiser (`train.sal_momentum` 0.9; decoder lr `sal_lr`, weight decay `sal_weight_decay_decoder` 1e-4; encoder
lr `sal_encoder_lr_factor` 0.1 * `sal_lr`, weight decay `sal_weight_decay_encoder` 1e-5) takes one step. The encoder
features handed to the classifier for the stream batch are those of this forward pass, i.e. from BEFORE the update,
and are detached so no classification gradient reaches the saliency net. Replayed and evaluated images get their
features from the net in eval mode without gradients. A frozen branch is really frozen: always in eval mode,
`requires_grad=False`, no optimiser, no step. The saliency maps are never stored in the replay buffer: the branch
learns from the stream only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ser_cli.continual.settings import TrainSettings
from ser_cli.metrics.saliency import kld_loss
from ser_cli.models.saliency_net import SaliencyNet
from ser_cli.models.saliency_optimizer import saliency_sgd

Autocast = Callable[[], contextlib.AbstractContextManager]


def saliency_optimizer(net: SaliencyNet, sal_lr: float, settings: TrainSettings | None = None) -> torch.optim.SGD:
    """The branch's optimiser (`ser_cli.models.saliency_optimizer`): decoder at `sal_lr`, encoder at
    `sal_encoder_lr_factor * sal_lr`, momentum and weight decays `train.sal_*` of `settings` (None: the defaults)."""
    s = settings if settings is not None else TrainSettings()
    return saliency_sgd(net, sal_lr, encoder_lr_factor=s.sal_encoder_lr_factor, momentum=s.sal_momentum,
                        weight_decay_decoder=s.sal_weight_decay_decoder,
                        weight_decay_encoder=s.sal_weight_decay_encoder)


class SaliencyBranch:
    """The saliency network of a SER learner, trained online on the stream's target maps (or frozen)."""

    def __init__(
        self, net: SaliencyNet, sal_lr: float, frozen: bool, autocast: Autocast = contextlib.nullcontext,
        stream_taps: str = "train", settings: TrainSettings | None = None,
    ) -> None:
        """Wrap `net`; freeze it or give it its optimiser.

        Args:
            net: The (pretrained) saliency network, on the training device.
            sal_lr: Decoder learning rate; the encoder uses 0.1 * sal_lr.
            frozen: Never update the branch (eval mode, no gradient, no optimiser).
            autocast: Context factory for forward passes (bf16 autocast on CUDA, or a no-op).
            stream_taps: `train`: the stream batch is modulated by the taps of the saliency step's own train-mode
                forward (the authors' design); `eval`: by taps of a separate eval-mode pass before the update, the
                BatchNorm statistics replay and test images see.
            settings: The run's `train.sal_*` optimiser hyperparameters (None: their defaults).
        """
        self.net = net
        self.stream_taps = stream_taps
        self.frozen = frozen
        self.autocast = autocast
        self.optimizer: torch.optim.SGD | None = None
        if frozen:
            net.eval()
            net.requires_grad_(False)
        else:
            self.optimizer = saliency_optimizer(net, sal_lr, settings)

    def stream_step(self, x: Tensor, maps: Tensor) -> tuple[list[Tensor], Tensor]:
        """Step 1 of a training step on the stream batch.

        Args:
            x: Normalised stream images, (B, 3, H, W).
            maps: Target saliency maps, (B, H, W), each summing to 1.

        Returns:
            The five encoder taps computed before the update, detached, and the KL loss (detached scalar).
        """
        if self.frozen:
            with torch.no_grad(), self.autocast():
                pred, taps = self.net(x)  # eval mode: the frozen branch never switches
            return taps, kld_loss(pred.float(), maps)
        eval_taps = self.features(x) if self.stream_taps == "eval" else None  # before the update, like `taps`
        self.net.train()
        with self.autocast():
            pred, taps = self.net(x)  # (B, 1, H, W), five (B, C_i, H_i, W_i)
        loss = kld_loss(pred.float(), maps)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return eval_taps or [t.detach() for t in taps], loss.detach()

    @torch.no_grad()
    def features(self, x: Tensor) -> list[Tensor]:
        """Encoder taps of replayed images: eval mode, no gradient (method.md section 4, step 3)."""
        with self._eval_mode(), self.autocast():
            return self.net.encoder.features(x)

    def eval_features(self, x: Tensor) -> list[Tensor]:
        """Encoder taps of test images: eval mode, differentiable with respect to `x` (end-to-end attacks)."""
        with self._eval_mode(), self.autocast():
            return self.net.encoder.features(x)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Predicted saliency maps in eval mode, (B, H, W) in float32."""
        with self._eval_mode(), self.autocast():
            pred, _ = self.net(x)
        return pred[:, 0].float()

    @contextlib.contextmanager
    def _eval_mode(self) -> Any:
        was_training = self.net.training
        self.net.eval()
        try:
            yield
        finally:
            self.net.train(was_training)

    def state_dict(self) -> dict[str, Any]:
        """Network weights and optimiser state (None when frozen)."""
        optimizer = self.optimizer.state_dict() if self.optimizer is not None else None
        return {"net": self.net.state_dict(), "optimizer": optimizer}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict()` of a branch with the same architecture and freezing."""
        self.net.load_state_dict(state["net"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
