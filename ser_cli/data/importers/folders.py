"""Folder listings shared by the importers: image files, class folders, and maps matched to their images.

Class-per-folder layouts (torchvision's ImageFolder; the SER authors' `images/<split>/<wnid>/`) give each class
the label its class order assigns, or its rank among the sorted folder names. Every check here fails with a
one-line `UserError` naming the folder or file: a class with no folder, an empty class folder, an image without
its map, a map without its image.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ser_cli.data.importers.base import Item
from ser_cli.data.importers.class_order import load_class_order
from ser_cli.runtime.errors import UserError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"})


def require_dir(path: Path, expected: str) -> Path:
    """`path` if it is a folder, else a UserError saying which layout was expected."""
    if not path.is_dir():
        raise UserError(f"{path}: folder not found; expected {expected}")
    return path


def list_files(folder: Path, suffixes: Iterable[str]) -> list[Path]:
    """Visible files directly in `folder` whose suffix (any case) is one of `suffixes`, sorted by name."""
    wanted = {s.lower() for s in suffixes}
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in wanted)


def subfolders(folder: Path) -> list[str]:
    """Names of the visible subfolders of `folder`, sorted."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def resolve_classes(train_dir: Path, test_dir: Path, class_order: str | None) -> tuple[list[str], str]:
    """Class names in label order and where the order came from (a class order, or the sorted train folders)."""
    if class_order is not None:
        order = load_class_order(class_order)
        return order.names, order.source
    names = subfolders(train_dir)
    if not names:
        raise UserError(f"{train_dir}: no class folders")
    extra = sorted(set(subfolders(test_dir)) - set(names))
    if extra:
        raise UserError(f"{test_dir / extra[0]}: class folder with no counterpart in {train_dir}")
    return names, "sorted folder names"


def class_items(split_dir: Path, names: list[str], limit: int | None, map_dir: Path | None = None) -> list[Item]:
    """One Item per image of every class of `names` under `split_dir/<name>/`, label = position in `names`.

    Args:
        limit: Keep the first `limit` images of each class (by name).
        map_dir: When given, each image `split_dir/<name>/<stem>.*` has its map at `map_dir/<name>/<stem>.png`.
    """
    items = []
    for label, name in enumerate(names):
        folder = split_dir / name
        if not folder.is_dir():
            raise UserError(f"{folder}: no folder for class {name!r}")
        images = list_files(folder, IMAGE_SUFFIXES)
        if not images:
            raise UserError(f"{folder}: empty class folder (no images)")
        maps = matched_maps(images, map_dir / name, ".png") if map_dir is not None else [None] * len(images)
        items += [Item(image, label, m) for image, m in list(zip(images, maps, strict=True))[:limit]]
    return items


def matched_maps(images: list[Path], map_folder: Path, suffix: str, name_of: str = "{stem}",
                 scope: str = "", kind: str = "map") -> list[Path]:
    """The map of each image (`map_folder/name_of.format(stem=...) + suffix`), checked both ways.

    Args:
        scope: Only maps whose file name starts with `scope` are checked for a missing image (a folder shared by
            several splits, told apart by a prefix).
        kind: What the files are, for the messages ("map", "fixation file").

    Raises:
        UserError: an image has no map, or a map in `map_folder` (matching the pattern) has no image.
    """
    maps = [map_folder / (name_of.format(stem=image.stem) + suffix) for image in images]
    missing = next((m for m in maps if not m.is_file()), None)
    if missing is not None:
        raise UserError(f"{missing}: {kind} not found for image {images[maps.index(missing)]}")
    _check_no_orphans(map_folder, set(maps), suffix, name_of, scope, kind, images[0].parent)
    return maps


def _check_no_orphans(map_folder: Path, expected: set[Path], suffix: str, name_of: str, scope: str, kind: str,
                      image_folder: Path) -> None:
    """Every map file of the pattern in `map_folder` is one of `expected`: a map without its image is refused."""
    prefix, tail = name_of.split("{stem}")
    for found in list_files(map_folder, [suffix]):
        ours = found.name.startswith(prefix + scope) and found.name.endswith(tail + suffix)
        if ours and found not in expected:
            stem = found.name[len(prefix):len(found.name) - len(tail + suffix)]
            raise UserError(f"{found}: {kind} has no image (no {stem}.* in {image_folder})")
