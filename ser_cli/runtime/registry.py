"""Registries by name: a dict filled by a decorator, whose unknown names are a one-line user error.

Methods, backbones, modulations and dataset formats each keep one `Registry`; adding one is a file and a decorator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ser_cli.runtime.errors import UserError

T = TypeVar("T")


class Registry(dict[str, Any]):
    """Name -> class or factory.

    Args:
        kind: What is registered, for messages ("method", "backbone", ...).
        setting: The params key users set it with, named first in the error (e.g. "train.method"), if any.
        set_name: Also store the name on the registered object as its `name` attribute.
    """

    def __init__(self, kind: str, setting: str = "", set_name: bool = False) -> None:
        super().__init__()
        self.kind, self.setting, self.set_name = kind, setting, set_name

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator recording its argument under `name` (twice is a programming error)."""

        def decorator(item: T) -> T:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            if self.set_name:
                item.name = name
            self[name] = item
            return item

        return decorator

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self)

    def lookup(self, name: str) -> Any:
        """The object registered as `name`; an unknown name is a UserError listing the choices."""
        if name not in self:
            prefix = f"{self.setting}: " if self.setting else ""
            raise UserError(f"{prefix}unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}")
        return self[name]
