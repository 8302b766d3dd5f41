"""Initialise the saliency encoder from a user's classification checkpoint (`--init-from`).

The paper's baselines start the saliency encoder from a classifier of the same architecture (Bellitto et al.,
NeurIPS 2024; method.md section 3). A classification checkpoint here is a state dict of a registered backbone
(`blocks.*` and `head.*` keys, as `build_backbone(name).state_dict()` gives), either plain or wrapped, at any
depth, in dicts under `state_dict` or `model` (the common conventions) or `classifier` (the continual learner's
`state_dict()`), possibly with DataParallel's `module.` prefix. The
classification head (`head.*`, `fc.*`, `linear.*`, `classifier.*`) is ignored: the encoder has none. Anything else
must match the encoder exactly, key for key and shape for shape; the first difference is reported in one line.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ser_cli.runtime.errors import UserError

WRAPPER_KEYS = ("state_dict", "model", "classifier")
HEAD_PREFIXES = ("head.", "fc.", "linear.", "classifier.")
# Older state dicts may lack BatchNorm's batch counters; they carry no weights, so their absence is harmless.
OPTIONAL_SUFFIXES = ("num_batches_tracked",)


def load_classifier_encoder(encoder: nn.Module, path: Path) -> int:
    """Copy the weights of a classification checkpoint into `encoder` (in place).

    Args:
        encoder: The saliency network's encoder (a backbone with its head removed).
        path: A `.pt` file holding a backbone state dict (see the module docstring for accepted layouts).

    Returns:
        The number of tensors loaded.

    Raises:
        UserError: the file is missing or unreadable, or its tensors do not match the encoder (the message names
            the file and the first missing, mismatching or unexpected key).
    """
    path = Path(path)
    weights = _strip_head(_unwrap(_read(path), path))
    expected = encoder.state_dict()
    _check_keys(weights, expected, path)
    encoder.load_state_dict(weights, strict=False)
    return len(weights)


def _read(path: Path) -> object:
    if not path.is_file():
        raise UserError(f"--init-from {path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user mistake
        raise UserError(f"--init-from {path}: not a readable torch checkpoint ({type(err).__name__})") from None


def _unwrap(payload: object, path: Path) -> dict[str, Tensor]:
    """The state dict inside `payload`: the payload itself, or the one under its wrapper keys (repeatedly)."""
    while isinstance(payload, dict):
        key = next((k for k in WRAPPER_KEYS if isinstance(payload.get(k), dict)), None)
        if key is None:
            break
        payload = payload[key]
    if not isinstance(payload, dict) or not all(isinstance(v, Tensor) for v in payload.values()):
        raise UserError(f"--init-from {path}: expected a state dict of tensors (plain, or under 'state_dict', "
                        f"'model' or 'classifier'), got {type(payload).__name__}")
    return {k.removeprefix("module."): v for k, v in payload.items()}


def _strip_head(weights: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v for k, v in weights.items() if not k.startswith(HEAD_PREFIXES)}


def _check_keys(weights: dict[str, Tensor], expected: dict[str, Tensor], path: Path) -> None:
    """Raise on the first missing key, then the first shape mismatch, then the first unexpected key."""
    for key, ref in expected.items():
        if key not in weights:
            if key.endswith(OPTIONAL_SUFFIXES):
                continue
            raise UserError(f"--init-from {path}: missing encoder key '{key}' (expected a state dict of the "
                            "configured saliency.backbone)")
        if weights[key].shape != ref.shape:
            raise UserError(f"--init-from {path}: shape mismatch at '{key}': file {tuple(weights[key].shape)}, "
                            f"encoder {tuple(ref.shape)} (is saliency.backbone the classifier's architecture?)")
    for key in weights:
        if key not in expected:
            raise UserError(f"--init-from {path}: unexpected key '{key}' (not part of the configured encoder)")
