"""The importer contract and registry: a published dataset layout in, a plan of rows out.

An importer reads only folder listings: `scan(src, options)` returns an `ImportPlan` with the class names and,
for each split of the store (`train`, `test`), one `Item` per row naming its image, its label and, where the
format has them, its continuous map and its fixation-point file. Decoding and resizing happen later, per item, in
worker processes (`ser_cli.data.importers.decode`), and `stages/import_data.py` writes the rows through the
atomic, resumable `StoreWriter`. Formats register with `@register_importer("name")`, in the style of timm's
model registry.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ser_cli.runtime.registry import Registry

# read_points(points_file, source (h, w), target (h, w)) -> (K, 3) int32 (observer, y, x) on the target grid
PointsReader = Callable[[Path, tuple[int, int], tuple[int, int]], np.ndarray]


@dataclass(frozen=True)
class ImportOptions:
    """What the user chose besides the format and the folder.

    Attributes:
        class_order: A built-in class order name or a file (classification formats only).
        limit_per_class: Keep only the first N images (sorted by name) of each class and split, for trials.
        test_fraction: Share of images held out as the test split (MIT1003, which has no official split).
        seed: Seed of that split.
    """

    class_order: str | None = None
    limit_per_class: int | None = None
    test_fraction: float | None = None
    seed: int = 0


@dataclass(frozen=True)
class Item:
    """The source files of one row."""

    image: Path
    label: int
    map: Path | None = None
    points: Path | None = None


@dataclass(frozen=True)
class ImportPlan:
    """Everything the writer needs before decoding a single pixel."""

    class_names: list[str]
    splits: dict[str, list[Item]]
    read_points: PointsReader | None = None
    details: dict[str, Any] = field(default_factory=dict)  # format-specific provenance

    def has_maps(self, split: str) -> bool:
        """Whether the rows of `split` have maps (importers give all rows of a split maps, or none)."""
        return all(item.map is not None for item in self.splits[split])

    def has_points(self, split: str) -> bool:
        """Whether the rows of `split` have fixation points."""
        return self.read_points is not None and all(item.points is not None for item in self.splits[split])

    def listing_sha256(self, root: Path) -> str:
        """sha256 of every row's files (relative to `root`) and label: identifies the plan, for resuming."""
        digest = hashlib.sha256(repr(self.class_names).encode())
        for split, items in sorted(self.splits.items()):
            digest.update(split.encode())
            for item in items:
                files = [str(p.relative_to(root)) if p else "" for p in (item.image, item.map, item.points)]
                digest.update(f"{files}|{item.label}\n".encode())
        return digest.hexdigest()


class Importer(ABC):
    """One published layout. Subclasses implement `scan` and register themselves by name."""

    name: str = ""

    @abstractmethod
    def scan(self, src: Path, options: ImportOptions) -> ImportPlan:
        """List the rows of the dataset under `src`.

        Raises:
            UserError: the layout is not the expected one; the message names the file or folder at fault.
        """


IMPORTERS = Registry("dataset format", set_name=True)


def register_importer(name: str) -> Callable[[type[Importer]], type[Importer]]:
    """Register an `Importer` subclass under `name` (the FORMAT argument of `ser data import`)."""
    return IMPORTERS.register(name)


def importer_names() -> list[str]:
    """Names of the registered formats, sorted."""
    return IMPORTERS.names()


def build_importer(name: str) -> Importer:
    """The importer registered as `name` (UserError for an unknown format)."""
    return IMPORTERS.lookup(name)()
