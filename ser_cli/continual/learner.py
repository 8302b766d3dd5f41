"""The network a continual-learning method trains: a classifier, plus the SER branch and modulation when SER is on.

Methods are written once and stay SER-agnostic: they call `learner.logits(x, role)` with role `"stream"` for the
current stream batch and `"replay"` for buffer images (`"eval"` for test images). Without SER every role is the
plain classifier. With SER (Bellitto et al., NeurIPS 2024, method.md section 4) the loop first runs
`saliency_step` on the stream batch, which trains the saliency branch and keeps its (pre-update, detached) encoder
taps; `"stream"` then modulates the classifier with those taps, `"replay"` with taps of the branch in eval mode
without gradients, and `"eval"` with taps of the branch in eval mode through which gradients do flow, so that
adversarial attacks run end to end through both branches (method.md section 5). At each enabled point the
modulation replaces the classifier's ReLU(c_i) by, for `multiply`, ReLU(c_i * s_i).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ser_cli.continual.ser import SaliencyBranch
from ser_cli.continual.settings import TrainSettings
from ser_cli.models.modulation import Modulation, build_modulation
from ser_cli.models.normalize import Normalizer
from ser_cli.models.prototype_head import PrototypeHead
from ser_cli.models.registry import Backbone, build_backbone
from ser_cli.models.saliency_net import SaliencyNet
from ser_cli.runtime.device import autocast, memory_format_for
from ser_cli.runtime.errors import UserError

Role = Literal["stream", "replay", "eval"]
COMPILE_BACKEND = "inductor"  # torch.compile's backend for `train.compile` (tests use a faster one)


class Learner:
    """Classifier (+ optional saliency branch and modulation) on one device."""

    def __init__(
        self,
        classifier: Backbone,
        normalizer: Normalizer,
        saliency: SaliencyBranch | None = None,
        modulation: Modulation | None = None,
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ) -> None:
        """Assemble the learner.

        Args:
            classifier: The classification backbone with its head.
            normalizer: Maps uint8 images to the networks' input.
            saliency: The SER branch, or None for the plain method.
            modulation: How saliency taps modulate the classifier; required iff `saliency` is given.
            autocast: Context factory for forward passes (bf16 autocast on CUDA, or a no-op).
        """
        if (saliency is None) != (modulation is None):
            raise ValueError("SER needs both a saliency branch and a modulation; the plain learner neither")
        self.classifier = classifier
        self.normalize = normalizer
        self.saliency = saliency
        self.modulation = modulation
        self.autocast = autocast
        self._stream: tuple[Tensor, list[Tensor]] | None = None  # (stream input, its saliency taps)
        self.diagnose = False  # measure the modulation on the next stream forward (`pop_diagnostics`)
        self._diagnostics: dict[str, Tensor] = {}
        self.head_config: dict[str, Any] | None = None  # set when `set_head` replaced the linear head

    @property
    def ser(self) -> bool:
        """Whether the saliency branch is on."""
        return self.saliency is not None

    def trainable_modules(self) -> list[nn.Module]:
        """Modules the classifier optimiser updates: the classifier and, with SER, the modulation."""
        return [self.classifier] if self.modulation is None else [self.classifier, self.modulation]

    def parameters(self) -> list[nn.Parameter]:
        """Parameters of the classifier optimiser (MNP parameters included; never the saliency net's)."""
        return [p for m in self.trainable_modules() for p in m.parameters()]

    def set_head(self, head: PrototypeHead) -> None:
        """Replace the classifier's linear head (CoPE's prototypes), before the classifier optimiser is built.

        The head becomes part of the classifier: its parameters are trained with it, its buffers are saved with it,
        and `logits` (test accuracy, attacks, Grad-CAM) go through it. Its `config()` is saved to rebuild it.
        """
        self.classifier.head = head.to(self.normalize.device)
        self.head_config = head.config()

    def train(self, mode: bool = True) -> None:
        """Train or eval mode for the classifier and modulation (the saliency branch manages its own mode)."""
        for module in self.trainable_modules():
            module.train(mode)

    def saliency_step(self, x: Tensor, maps: Tensor) -> dict[str, Tensor]:
        """Step 1 of a training step: train the saliency branch on the stream batch and keep its taps for `x`.

        Args:
            x: Normalised stream images, (B, 3, H, W).
            maps: Target saliency maps, (B, H, W).

        Returns:
            {"saliency_kld": loss} with SER, {} without.
        """
        if self.saliency is None:
            return {}
        taps, loss = self.saliency.stream_step(x, maps)
        self._stream = (x, taps)
        return {"saliency_kld": loss}

    def forget_stream_taps(self) -> None:
        """Forget the stream batch's taps (frees their memory once no forward needs them; `logits(x, "stream")`
        refuses afterwards until the next `saliency_step`)."""
        self._stream = None

    def logits(self, x: Tensor, role: Role) -> Tensor:
        """Class scores for normalised images.

        Args:
            x: Normalised images, (B, 3, H, W).
            role: "stream" for the batch given to `saliency_step`, "replay" for buffer images, "eval" for test or
                attacked images (differentiable through the saliency branch).

        Returns:
            (B, n_classes) logits.
        """
        modulate = self._role_modulation(x, role)
        # without SER the classifier is called plainly: any module mapping images to logits serves
        return self.classifier(x) if modulate is None else self.classifier(x, modulate=modulate)

    def pooled(self, x: Tensor, role: Role) -> Tensor:
        """The classifier's pooled features before its head, (B, C), for the same roles as `logits`.

        Metric-learning methods (CoPE) compute their loss on these and apply the head's parts themselves.
        """
        return self.classifier.embed(x, modulate=self._role_modulation(x, role))

    def _role_modulation(self, x: Tensor, role: Role) -> Callable[[int, Tensor], Tensor] | None:
        if self.saliency is None:
            return None
        record = self.diagnose and role == "stream"
        return self._modulate(self._taps(x, role), record)

    def _taps(self, x: Tensor, role: Role) -> list[Tensor]:
        if role == "replay":
            return self.saliency.features(x)
        if role == "eval":
            return self.saliency.eval_features(x)
        if self._stream is None or self._stream[0] is not x:
            raise RuntimeError("role='stream' needs the batch passed to saliency_step in this step")
        return self._stream[1]

    def _modulate(self, taps: list[Tensor], record: bool = False) -> Callable[[int, Tensor], Tensor]:
        def modulate(i: int, c_pre: Tensor) -> Tensor:
            out = self.modulation(i, c_pre, taps[i])
            if record:
                self._diagnostics.update(modulation_diagnostics(i, c_pre, out, self.classifier.activations[i]))
            return out

        return modulate

    def pop_diagnostics(self) -> dict[str, Tensor]:
        """The modulation measured on the last stream batch (empty unless `diagnose` was set), then forget it."""
        diagnostics, self._diagnostics, self.diagnose = self._diagnostics, {}, False
        return diagnostics

    @torch.no_grad()
    def predict_saliency(self, x: Tensor) -> Tensor:
        """The saliency branch's maps for normalised images, (B, H, W); needs SER."""
        if self.saliency is None:
            raise RuntimeError("predict_saliency needs SER")
        return self.saliency.predict(x)

    def eval_logits(self, x01: Tensor) -> Tensor:
        """Logits of float images on the [0, 1] scale, for evaluation and attacks (call `train(False)` first).

        Args:
            x01: (B, 3, H, W) in [0, 1].

        Returns:
            (B, n_classes), differentiable end to end with respect to `x01` (both branches).
        """
        with self.autocast():
            return self.logits(self.normalize.unit(x01), "eval")

    def state_dict(self) -> dict[str, Any]:
        """Weights of every network (and the saliency optimiser), plus what rebuilds the saliency net."""
        state: dict[str, Any] = {"classifier": self.classifier.state_dict()}
        if self.head_config is not None:
            state["head_config"] = dict(self.head_config)
        if self.modulation is not None:
            state["modulation"] = self.modulation.state_dict()
            state["saliency"] = self.saliency.state_dict()
            state["saliency_config"] = self.saliency.net.config()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict()` of a learner with the same networks."""
        if ("saliency" in state) != self.ser:
            raise ValueError("checkpoint and learner disagree on SER")
        if state.get("head_config") != self.head_config:
            raise ValueError("checkpoint and learner disagree on the output head")
        self.classifier.load_state_dict(state["classifier"])
        if self.modulation is not None:
            self.modulation.load_state_dict(state["modulation"])
            self.saliency.load_state_dict(state["saliency"])


@torch.no_grad()
def modulation_diagnostics(i: int, c_pre: Tensor, out: Tensor,
                           act: Callable[[Tensor], Tensor] = torch.relu) -> dict[str, Tensor]:
    """How much the modulation at point `i` changes the classifier's features on a batch.

    `mod_norm_ratio_i` = ||out|| / ||act(c)||, the modulated features' norm against what the plain network would
    pass on (1: unchanged; << 1: the modulation crushes the features). `mod_zeroed_i` = the share of the units
    act(c) keeps active (> 0) that the modulation sets to zero (<= 0). `act` is the backbone's activation there.
    """
    plain = act(c_pre.float())  # (B, C, H, W)
    out = out.float()
    active = plain > 0
    ratio = out.norm() / plain.norm().clamp_min(1e-12)
    zeroed = ((out <= 0) & active).sum() / active.sum().clamp_min(1)
    return {f"mod_norm_ratio_{i}": ratio, f"mod_zeroed_{i}": zeroed.float()}


def build_learner(
    settings: TrainSettings, device: torch.device | str, saliency_net: SaliencyNet | None = None,
    classifier_weights: dict[str, Tensor] | None = None,
) -> Learner:
    """The classifier for `settings.n_classes` classes, plus the SER branch and modulation when `settings.ser`.

    Args:
        settings: Backbone, SER switch, modulation, saliency lr and freezing, precision.
        device: Training device.
        saliency_net: The pretrained saliency network for SER; None builds an untrained one (tests, ablations).
        classifier_weights: Backbone tensors without the head (`load_backbone_weights` checked them) that the
            classifier starts from; None keeps the seeded random initialisation.

    Raises:
        UserError: the saliency network's encoder does not have the classifier's tap widths, or a bad
            backbone / modulation / precision name.
    """
    device = torch.device(device)
    memory_format = memory_format_for(settings.memory_format, settings.precision, device)
    classifier = build_backbone(settings.backbone, settings.n_classes)
    if classifier_weights is not None:
        classifier.load_state_dict(classifier_weights, strict=False)  # the head keeps its seeded initialisation
    classifier = classifier.to(device, memory_format=memory_format)
    classifier.checkpoint_blocks = settings.activation_checkpointing
    if settings.compile:
        classifier.compile(backend=COMPILE_BACKEND)  # in place: the state dict keeps its keys
    learner_autocast = functools.partial(autocast, settings.precision, device)
    normalizer = Normalizer(device, memory_format)
    if not settings.ser:
        return Learner(classifier, normalizer, autocast=learner_autocast)
    net = saliency_net if saliency_net is not None else SaliencyNet(settings.backbone)
    if list(net.encoder.tap_channels) != list(classifier.tap_channels):
        raise UserError(
            f"saliency network taps {net.encoder.tap_channels} do not match the classifier's "
            f"{classifier.tap_channels}: pretrain the saliency net on train.backbone={settings.backbone!r}"
        )
    net = net.to(device, memory_format=memory_format)
    net.set_activation_checkpointing(settings.activation_checkpointing)
    if settings.compile:
        net.compile(backend=COMPILE_BACKEND)
    modulation = build_modulation(settings.mnp, classifier.tap_channels, list(settings.mnp_blocks),
                                  classifier.activations)
    modulation = modulation.to(device, memory_format=memory_format)
    classifier.recomputed_with = (modulation,)  # a tuple, not a submodule: the state dict stays as it is
    branch = SaliencyBranch(net, settings.sal_lr, settings.saliency_frozen, learner_autocast, settings.stream_taps,
                            settings)
    return Learner(classifier, normalizer, branch, modulation, learner_autocast)


def restore_learner(settings: TrainSettings, state: dict[str, Any], device: torch.device | str) -> Learner:
    """Rebuild a trained learner from `Learner.state_dict()` (the `"learner"` entry of a training state).

    Args:
        settings: The run's settings (the `"settings"` entry, via `TrainSettings.from_mapping`).
        state: The learner's state.
        device: Where to put it.

    Returns:
        The learner, in eval mode.
    """
    net = SaliencyNet(**state["saliency_config"]) if settings.ser else None
    # eager: evaluation is short, and a run compiled on a GPU should not pay inductor's compilation on a CPU
    learner = build_learner(settings.model_copy(update={"compile": False}), device, net)
    if "head_config" in state:
        learner.set_head(PrototypeHead(**state["head_config"]))
    learner.load_state_dict(state)
    learner.train(False)
    return learner
