"""Class orders: which folder name gets which label, as the SER paper fixes them for its benchmarks.

A class order is a YAML file in one of three shapes: a flat mapping `name: label` (the paper's
`class_order_mini_imagenet.yaml`), a mapping of groups of such mappings (`class_order_fg_imagenet.yaml`, groups
'0'..'9' of ten classes), or a plain list of names (label = position); a `.txt` file with one name per line is
also read as a list. Labels must be exactly 0..K-1. The paper's two orders ship with the package and are
selected by name (`fg-imagenet`, `mini-imagenet`); anything else is a path.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ser_cli.runtime.errors import UserError
from ser_cli.runtime.yaml_files import safe_yaml

BUILTIN_PACKAGE = "ser_cli.data.class_orders"


@dataclass(frozen=True)
class ClassOrder:
    """Class names in label order (`names[label]`) and where they came from."""

    names: list[str]
    source: str  # a built-in name or the absolute path of the file

    def label_of(self) -> dict[str, int]:
        """name -> label."""
        return {name: label for label, name in enumerate(self.names)}


def builtin_class_orders() -> list[str]:
    """Names of the class orders shipped with the package, sorted."""
    files = resources.files(BUILTIN_PACKAGE).iterdir()
    return sorted(f.name.removesuffix(".yaml") for f in files if f.name.endswith(".yaml"))


def load_class_order(spec: str) -> ClassOrder:
    """Read the class order `spec`: a built-in name (see `builtin_class_orders`) or a YAML / text file.

    Raises:
        UserError: the file is missing or unreadable, or its labels are not exactly 0..K-1.
    """
    if spec in builtin_class_orders():
        text = resources.files(BUILTIN_PACKAGE).joinpath(f"{spec}.yaml").read_text()
        return ClassOrder(_names_from(yaml.safe_load(text), spec), spec)
    path = Path(spec).expanduser().resolve()
    if not path.is_file():
        raise UserError(f"{spec}: class order not found; give a file or one of: {', '.join(builtin_class_orders())}")
    return ClassOrder(_names_from(_read(path), str(path)), str(path))


def _read(path: Path) -> Any:
    try:
        text = path.read_text()
        if path.suffix == ".txt":
            return [line.strip() for line in text.splitlines() if line.strip()]
        return safe_yaml(text, str(path))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UserError(f"{path}: unreadable class order ({type(err).__name__})") from None


def _names_from(data: Any, where: str) -> list[str]:
    """Names in label order from a list, a flat mapping or a mapping of groups."""
    if isinstance(data, list) and data and all(isinstance(n, str | int) for n in data):
        pairs = [(str(name), label) for label, name in enumerate(data)]
    elif isinstance(data, dict) and data:
        pairs = _pairs_of_mapping(data, where)
    else:
        raise UserError(f"{where}: a class order must be a list of names or a mapping name -> label")
    return _ordered(pairs, where)


def _pairs_of_mapping(data: dict, where: str) -> list[tuple[str, int]]:
    if all(isinstance(v, dict) for v in data.values()):  # groups of {name: label}
        data = {k: v for group in data.values() for k, v in group.items()}
    pairs = []
    for name, label in data.items():
        if not isinstance(label, int) or isinstance(label, bool):
            raise UserError(f"{where}: label of class {name!r} must be an integer (got {label!r})")
        pairs.append((str(name), label))
    return pairs


def _ordered(pairs: list[tuple[str, int]], where: str) -> list[str]:
    names = [name for name, _ in pairs]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise UserError(f"{where}: class {duplicate!r} is listed twice")
    labels = sorted(label for _, label in pairs)
    if labels != list(range(len(pairs))):
        missing = sorted(set(range(len(pairs))) - set(labels))
        raise UserError(f"{where}: labels must be exactly 0..{len(pairs) - 1} once each (missing: {missing[:5]})")
    return [name for name, _ in sorted(pairs, key=lambda p: p[1])]
