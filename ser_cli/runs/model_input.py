"""The input a saliency model was trained on, recorded in its `model.pt`, and the warning when other data meets it.

`ser pretrain-saliency` writes `meta.input = {height, width, scale, mean, std}`: the image size of its training data
and the normalisation `Normalizer` applies ((x / 255 - mean) / std, ImageNet statistics). A predictor run on images of
another size still runs (the network is fully convolutional) but its maps are often poor: learned centre biases and
receptive fields are tied to the size, so `ser precompute` and `ser predict` print one warning line instead of
staying silent. Files written before the record existed have no `input` and load as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ser_cli.models.normalize import IMAGENET_MEAN, IMAGENET_STD
from ser_cli.runtime.errors import UserError
from ser_cli.runtime.progress import stderr_console
from ser_cli.runtime.torch_file import read_torch_file

KEY = "input"


def input_record(height: int, width: int) -> dict[str, Any]:
    """What `model.pt` records about its input: the training images' size and the normalisation."""
    return {"height": int(height), "width": int(width), "scale": "x / 255",
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


def recorded_size(meta: Any) -> tuple[int, int] | None:
    """(height, width) from a checkpoint's `meta`, or None for a file from before the record (or a crafted one)."""
    record = meta.get(KEY) if isinstance(meta, dict) else None
    if not isinstance(record, dict):
        return None
    height, width = record.get("height"), record.get("width")
    return (height, width) if type(height) is int and type(width) is int else None


def read_recorded_size(path: Path | str) -> tuple[int, int] | None:
    """The recorded input size of a `ser pretrain-saliency` `model.pt` (None: not recorded, or another kind of file).

    Memory-maps the file, so reading this next to the loaded model costs no second copy of the weights.
    """
    try:
        payload = read_torch_file(path, mmap=True)
    except UserError:  # whoever loads the model reports an unreadable file
        return None
    return recorded_size(payload.get("meta")) if isinstance(payload, dict) else None


def warn(message: str) -> None:
    """The warning on stderr as one line whatever the terminal's width (and with --quiet: it is not a status line)."""
    stderr_console.print(message, soft_wrap=True, markup=False, highlight=False)


def size_warning(model: Path | str, trained: tuple[int, int] | None, size: tuple[int, int], what: str) -> str | None:
    """One line when `size` (of `what`) is not the size `model` was trained at; None when it is or is unknown."""
    if trained is None or tuple(trained) == tuple(size):
        return None
    (h, w), (sh, sw) = trained, size
    return (f"warning: {model} was trained on {h}x{w} images but {what} is {sh}x{sw}: its maps may be poor; pretrain "
            f"at {sh}x{sw} (--set data.height={sh} --set data.width={sw}) or use {h}x{w} images")
