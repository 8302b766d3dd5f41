"""Registry of continual-learning methods by name: `@register_method("er")` on the class, `build_method` to build.

Adding a method is one file with one decorated `Method` subclass, imported by `ser_cli.continual.methods`.
"""

from __future__ import annotations

from collections.abc import Callable

from ser_cli.continual.learner import Learner
from ser_cli.continual.methods.base import Method
from ser_cli.continual.seeds import BUFFER, derive_seed
from ser_cli.continual.settings import TrainSettings
from ser_cli.runtime.errors import UserError
from ser_cli.runtime.registry import Registry

METHODS = Registry("method", setting="train.method", set_name=True)


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Register a `Method` subclass under `name` (also stored as its `name` attribute)."""
    return METHODS.register(name)


def method_names() -> list[str]:
    """Names of the registered methods, sorted."""
    return METHODS.names()


def method_class(name: str) -> type[Method]:
    """The class registered as `name` (UserError for an unknown name)."""
    return METHODS.lookup(name)


def build_method(name: str, learner: Learner, settings: TrainSettings, image_shape: tuple[int, int, int]) -> Method:
    """Build method `name` for `learner`, with its buffer (`Method.buffer_class`) on the learner's device if it replays.

    Args:
        name: A registered method name.
        learner: The networks to train.
        settings: Hyperparameters; `buffer_size`, `n_classes` and `seed` size and seed the buffer.
        image_shape: (3, H, W) of the stream images.

    Raises:
        UserError: unknown name, or a replay method with `buffer_size` 0.
    """
    cls = method_class(name)
    buffer = None
    if cls.uses_buffer:
        if settings.buffer_size < 1:
            raise UserError(f"train.buffer_size: method {name!r} replays and needs buffer_size >= 1, got 0")
        buffer = cls.buffer_class(
            settings.buffer_size,
            image_shape,
            learner.normalize.device,
            store_logits=settings.n_classes if cls.stores_logits else None,
            seed=derive_seed(settings.seed, BUFFER),
        )
    return cls(learner, settings, buffer)
