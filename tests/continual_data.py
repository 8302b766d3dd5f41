"""Tiny in-memory class-incremental data for the continual-learning tests: each class is a coloured square at a
class-specific place on a noisy background, and its saliency map is a blob on that square."""

from __future__ import annotations

import torch

from ser_cli.continual.learner import Learner, build_learner
from ser_cli.continual.methods import StreamBatch, build_method
from ser_cli.continual.settings import TrainSettings
from ser_cli.continual.stream import TensorTaskStream

H, W = 16, 24


def _split(n_classes: int, per_class: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    labels = torch.arange(n_classes).repeat_interleave(per_class)  # (N,)
    images = torch.randint(0, 60, (len(labels), 3, H, W), generator=generator, dtype=torch.uint8)
    maps = torch.full((len(labels), H, W), 1e-3)
    for i, c in enumerate(labels.tolist()):
        y, x = 2 + 6 * (c % 2), 2 + 4 * (c // 2)
        colour = torch.tensor([200 * (c % 3 == 0), 200 * (c % 3 == 1), 200 * (c % 3 == 2)], dtype=torch.uint8) + 50
        images[i, :, y : y + 6, x : x + 6] = colour[:, None, None]
        maps[i, y : y + 6, x : x + 6] += 1.0
    return images, maps / maps.sum(dim=(1, 2), keepdim=True), labels


def tiny_stream(
    n_tasks: int = 3, classes_per_task: int = 2, batch_size: int = 4, per_class: int = 8, seed: int = 0
) -> TensorTaskStream:
    """A stream of n_tasks x classes_per_task classes, per_class training and 4 test images per class."""
    generator = torch.Generator().manual_seed(seed)
    n_classes = n_tasks * classes_per_task
    train = _split(n_classes, per_class, generator)
    test = _split(n_classes, 4, generator)
    return TensorTaskStream(train, test, n_tasks, classes_per_task, batch_size, seed=seed, test_batch_size=16)


def tiny_settings(**overrides: object) -> TrainSettings:
    """Settings for the tiny stream: reduced ResNet-18, 3 tasks x 2 classes, batch 4, buffer 12."""
    base = dict(
        method="derpp",
        backbone="resnet18_reduced",
        n_tasks=3,
        classes_per_task=2,
        batch_size=4,
        minibatch_size=4,
        buffer_size=12,
        lr=0.05,
        seed=0,
        precision="fp32",
    )
    return TrainSettings(**{**base, **overrides})


def derpp_ser_steps(steps: int, **overrides: object) -> tuple[Learner, list[dict[str, float]]]:
    """DER++ + SER on the tiny stream's first task for `steps` steps (at most 4; the later ones replay), seeded as a
    run is; returns the learner and each step's losses."""
    torch.manual_seed(0)
    settings = tiny_settings(method="derpp", ser=True, **overrides)
    learner = build_learner(settings, "cpu")
    method = build_method("derpp", learner, settings, (3, 16, 24))
    logs = []
    method.before_task(0)
    for images, maps, labels, _ in list(tiny_stream().train_loader([0]))[:steps]:
        torch.manual_seed(len(logs))  # the saliency decoder's dropout
        logs.append({k: v.item() for k, v in method.observe(StreamBatch(images, maps, labels)).items()})
    return learner, logs
