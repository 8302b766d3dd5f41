"""SER as a library: put Saliency-driven Experience Replay into your own training loop.

    from ser_cli.api import SERLearner

    learner = SERLearner.from_config({"method": "derpp", "ser": True, "n_tasks": 2, "classes_per_task": 2},
                                     image_shape=(3, 32, 48))
    for task in range(2):
        learner.begin_task(task)
        for images, labels, maps in my_batches(task):      # uint8 (B, 3, H, W), int64 (B,), float (B, H, W)
            losses = learner.observe(images, labels, maps)  # one training step: {"loss": ..., "saliency_kld": ...}
        learner.end_task(task)
        print(learner.evaluate(test_images, test_labels))   # {"class_il": %, "task_il": %, "per_task": {...}}
    learner.save("learner.pt"); learner = SERLearner.load("learner.pt")

A thin wrapper over what `ser train` runs (`ser_cli.continual`): `TrainSettings` (every `train.*` key of
`params.yaml`, `ser params train` lists them), `build_learner` (classifier + saliency branch + modulation),
`build_method` (the method's step, buffer and optimiser) and `evaluate_task`. The same settings and seed on the
same batches give the same numbers as `ser train` (tests/test_api.py). Labels are task-ordered: task t owns
classes t * classes_per_task ... (t + 1) * classes_per_task - 1. Maps are the SER targets, each summing to 1
(`normalise_maps`); plain methods (`ser: false`) ignore them. `TrainLoggers` writes TensorBoard / DVCLive
curves; `load_run` reads a `ser train` run folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ser_cli.continual.evaluation import evaluate_task
from ser_cli.continual.learner import Learner, build_learner
from ser_cli.continual.loggers import TrainLoggers
from ser_cli.continual.methods import Method, StreamBatch, build_method, method_names
from ser_cli.continual.seeds import seed_run
from ser_cli.continual.settings import TrainSettings
from ser_cli.continual.stream import TensorTaskStream
from ser_cli.models.saliency_net import SaliencyNet
from ser_cli.runs.run_io import LoadedRun, load_run
from ser_cli.runtime.checkpoint import load_artifact, save_checkpoint
from ser_cli.runtime.errors import UserError

__all__ = ["LoadedRun", "SERLearner", "TensorTaskStream", "TrainLoggers", "TrainSettings", "load_run",
           "load_saliency_net", "method_names", "normalise_maps"]

KIND = "ser-api-learner"
FORMAT_VERSION = 1


class SERLearner:
    """One continual learner (a registered method, with or without SER) that your loop feeds batch by batch."""

    def __init__(self, settings: TrainSettings, image_shape: tuple[int, int, int], device: torch.device | str = "cpu",
                 saliency_net: SaliencyNet | None = None,
                 classifier_weights: dict[str, Tensor] | None = None) -> None:
        """Seed from `settings.seed` (as `ser train` does), then build the networks, the method and its buffer.

        Args:
            settings: The run's hyperparameters.
            image_shape: (3, H, W) of the images `observe` will get.
            device: Training device.
            saliency_net: A pretrained saliency network for SER (`load_saliency_net`); None: an untrained one.
            classifier_weights: Backbone tensors (no head) the classifier starts from; None: seeded random.
        """
        seed_run(settings.seed)
        self.settings = settings
        self.image_shape = tuple(image_shape)
        self.learner: Learner = build_learner(settings, device, saliency_net, classifier_weights)
        self.method: Method = build_method(settings.method, self.learner, settings, self.image_shape)
        self.task = -1  # no task begun yet
        self.steps = 0

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | TrainSettings, image_shape: tuple[int, int, int],
                    device: torch.device | str = "cpu", saliency_checkpoint: Path | str | None = None) -> SERLearner:
        """Build from `train.*` keys (a dict, e.g. `params.yaml`'s `train` section) or from `TrainSettings`.

        Args:
            config: Train settings; keys `params.yaml` has but the library does not (`workers`, `loggers`, ...)
                are ignored. `classifier_init` (absent: random) resolves as in `ser train`: `auto` starts a plain
                method from the saliency checkpoint's encoder, SER from random weights.
            image_shape: (3, H, W).
            device: Training device.
            saliency_checkpoint: `model.pt` of `ser pretrain-saliency` (default: the config's
                `saliency_checkpoint`): SER's starting branch, and the encoder of `classifier_init: saliency`.

        Raises:
            UserError: a bad key value (naming `train.KEY`), an unknown method, `classifier_init: saliency`
                without a checkpoint, or a classification checkpoint (`ser train` loads those).
        """
        if not isinstance(config, TrainSettings):
            saliency_checkpoint = saliency_checkpoint or config.get("saliency_checkpoint")
            config = TrainSettings.from_mapping({**config, "saliency_checkpoint": saliency_checkpoint})
        net = load_saliency_net(saliency_checkpoint) if saliency_checkpoint else None
        weights = _start_weights(config, net)  # before seeding: building the template draws random numbers
        return cls(config, image_shape, device, net if config.ser else None, weights)

    @property
    def device(self) -> torch.device:
        """The training device."""
        return self.learner.normalize.device

    def begin_task(self, task: int) -> None:
        """Call before the first batch of task `task` (0-based, in order)."""
        self.task = task
        self.method.before_task(task)
        self.learner.train(True)

    def end_task(self, task: int) -> None:
        """Call after the last batch of task `task` (some methods consolidate here)."""
        self.method.after_task(task)

    def observe(self, images: Tensor, labels: Tensor, maps: Tensor | None = None) -> dict[str, float]:
        """One training step on a stream batch: the saliency step (SER), the method's loss, SGD, the buffer.

        Args:
            images: uint8 (B, 3, H, W).
            labels: int64 (B,), task-ordered class indices.
            maps: Target saliency maps (B, H, W), each summing to 1 (`normalise_maps`), needed with SER.

        Returns:
            The step's losses as floats (`loss`, the method's terms, `saliency_kld` with SER).

        Raises:
            UserError: called before `begin_task`, images not uint8, or SER without maps.
        """
        if self.task < 0:
            raise UserError("SERLearner.observe: call begin_task(0) first")
        if images.dtype != torch.uint8:
            raise UserError(f"SERLearner.observe: images must be uint8 (B, 3, H, W), got {images.dtype}")
        if self.learner.ser and maps is None:
            raise UserError("SERLearner.observe: SER needs the batch's target saliency maps (B, H, W)")
        maps = torch.zeros(0) if maps is None else maps.to(self.device, torch.float32)
        batch = StreamBatch(images.to(self.device), maps, labels.to(self.device))
        losses = self.method.observe(batch)
        self.steps += 1
        return {k: float(v) for k, v in losses.items()}

    def logits(self, images: Tensor) -> Tensor:
        """Class scores (B, n_classes) of uint8 images, in eval mode, without gradients."""
        self.learner.train(False)
        try:
            with torch.no_grad(), self.learner.autocast():
                return self.learner.logits(self.learner.normalize(images.to(self.device)), "eval").float()
        finally:
            self.learner.train(True)

    def saliency(self, images: Tensor) -> Tensor:
        """The SER branch's saliency maps (B, H, W) of uint8 images; needs SER."""
        if not self.learner.ser:
            raise UserError("SERLearner.saliency: this learner has no saliency branch (ser: false)")
        return self.learner.predict_saliency(self.learner.normalize(images.to(self.device))).float()

    def evaluate(self, images: Tensor, labels: Tensor, maps: Tensor | None = None,
                 batch_size: int = 64) -> dict[str, Any]:
        """Accuracy on test images of the tasks seen so far, as `ser train` measures it after each task.

        Args:
            images: uint8 (N, 3, H, W).
            labels: int64 (N,); images of tasks not begun yet are left out.
            maps: Ground-truth maps (N, H, W) to score the SER branch against (KLD, CC, SIM); None skips it.
            batch_size: Images per forward.

        Returns:
            {"class_il": mean over tasks, "task_il": mean over tasks, "per_task": {task (1-based): scores}}; class-IL
            takes the argmax over the classes seen so far (`class_il_logits: seen`) or all.
        """
        cpt, seen = self.settings.classes_per_task, self.task + 1
        n_logits = seen * cpt if self.settings.class_il_logits == "seen" else None
        per_task: dict[int, dict[str, float]] = {}
        self.learner.train(False)
        try:
            for task in range(seen):
                rows = torch.nonzero(labels // cpt == task).flatten()
                if len(rows) == 0:
                    continue
                batches = _batches(images, labels, maps, rows, batch_size)
                scores = evaluate_task(self.learner, batches, task, cpt, n_logits)
                saliency = scores.saliency if maps is not None else {}
                per_task[task + 1] = {"class_il": scores.class_il, "task_il": scores.task_il, **saliency}
        finally:
            self.learner.train(True)
        mean = {k: sum(s[k] for s in per_task.values()) / len(per_task) for k in ("class_il", "task_il")} \
            if per_task else {"class_il": float("nan"), "task_il": float("nan")}
        return {**mean, "per_task": per_task}

    def state_dict(self) -> dict[str, Any]:
        """Settings, networks, optimiser and buffer: everything `load_state_dict` continues from."""
        return {"kind": KIND, "format_version": FORMAT_VERSION, "settings": self.settings.to_dict(),
                "image_shape": list(self.image_shape), "learner": self.learner.state_dict(),
                "method": self.method.state_dict(), "task": self.task, "steps": self.steps}

    def save(self, path: Path | str) -> None:
        """Write the learner to `path` atomically (loads with `torch.load(weights_only=True)`)."""
        save_checkpoint(Path(path), self.state_dict())

    @classmethod
    def load(cls, path: Path | str, device: torch.device | str = "cpu") -> SERLearner:
        """A learner saved with `save`, ready to evaluate or to continue training."""
        state = load_artifact(Path(path), KIND, FORMAT_VERSION, "SERLearner.save", "saved learner", device)
        settings = TrainSettings.from_mapping(state["settings"])
        saliency_config = state["learner"].get("saliency_config")
        net = SaliencyNet(**saliency_config) if saliency_config else None
        learner = cls(settings, tuple(state["image_shape"]), device, net)
        learner.learner.load_state_dict(state["learner"])
        learner.method.load_state_dict(state["method"])
        learner.task, learner.steps = int(state["task"]), int(state["steps"])
        return learner


def normalise_maps(maps: Tensor) -> Tensor:
    """Non-negative maps (B, H, W) scaled to sum 1 each, as SER's targets are (float32)."""
    maps = maps.float().clamp_min(0)
    return maps / maps.sum(dim=(1, 2), keepdim=True).clamp_min(1e-12)


def load_saliency_net(path: Path | str) -> SaliencyNet:
    """The saliency network of a `ser pretrain-saliency` `model.pt` or a SER run's (SER's starting branch)."""
    from ser_cli.runs.saliency_model import load_saliency_model

    return load_saliency_model(Path(path), need_network=True).net


def _start_weights(settings: TrainSettings, net: SaliencyNet | None) -> dict[str, Tensor] | None:
    """The classifier's starting backbone for `settings.classifier_init`, as `ser train` picks it."""
    if settings.classifier_init == "random":
        return None
    if settings.classifier_init == "checkpoint":
        raise UserError("train.classifier_init: a classification checkpoint is loaded by `ser train`; in the API "
                        "start from random or saliency")
    if net is None:
        raise UserError("train.classifier_init=saliency: pass saliency_checkpoint (the model.pt of "
                        "`ser pretrain-saliency`) or set classifier_init: random")
    from ser_cli.models.registry import build_backbone
    from ser_cli.saliency.encoder_init import backbone_weights

    template = build_backbone(settings.backbone, settings.n_classes)
    return backbone_weights(template, net.encoder.state_dict(), "train.classifier_init=saliency")


def _batches(images: Tensor, labels: Tensor, maps: Tensor | None, rows: Tensor, size: int):
    """Test batches in the data API's tuple form; zero maps when none are given (the saliency scores then mean
    nothing, and `evaluate` drops them)."""
    for chunk in rows.split(size):
        m = maps[chunk].float() if maps is not None else torch.full((len(chunk), *images.shape[2:]), 1.0)
        yield images[chunk], m, labels[chunk], chunk
