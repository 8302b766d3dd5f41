"""Start a backbone from another network's weights: the saliency encoder from a classification checkpoint
(`--init-from`), or the continual classifier from the saliency encoder or a classification checkpoint
(`train.classifier_init`).

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

from torch import Tensor, nn

from ser_cli.runtime.errors import UserError
from ser_cli.runtime.torch_file import read_torch_file

WRAPPER_KEYS = ("state_dict", "model", "classifier")
HEAD_PREFIXES = ("head.", "fc.", "linear.", "classifier.")
# Older state dicts may lack BatchNorm's batch counters; they carry no weights, so their absence is harmless.
OPTIONAL_SUFFIXES = ("num_batches_tracked",)


def backbone_weights(classifier: nn.Module, weights: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """`weights` (a backbone state dict; any head is dropped) checked against `classifier`'s backbone, key for key.

    Args:
        classifier: The network to start (its own `head.*` keeps its initialisation).
        weights: Tensors of an encoder or a classification checkpoint.
        source: How the message names where the weights came from, e.g. "train.classifier_init model.pt".

    Raises:
        UserError: a missing, mismatching or unexpected key, named in one line.
    """
    expected = _strip_head(classifier.state_dict())
    weights = _strip_head({k.removeprefix("module."): v for k, v in weights.items()})
    _check_keys(weights, expected, source)
    return weights


def classification_weights(path: Path, option: str) -> dict[str, Tensor]:
    """The tensors of a classification checkpoint file (layouts as in the module docstring)."""
    return _unwrap(_read(Path(path), option), f"{option} {path}")


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
    weights = _strip_head(classification_weights(path, "--init-from"))
    expected = encoder.state_dict()
    _check_keys(weights, expected, f"--init-from {path}")
    encoder.load_state_dict(weights, strict=False)
    return len(weights)


def _read(path: Path, option: str) -> object:
    return read_torch_file(path, f"{option} {path}")


def _unwrap(payload: object, source: str) -> dict[str, Tensor]:
    """The state dict inside `payload`: the payload itself, or the one under its wrapper keys (repeatedly)."""
    while isinstance(payload, dict):
        key = next((k for k in WRAPPER_KEYS if isinstance(payload.get(k), dict)), None)
        if key is None:
            break
        payload = payload[key]
    if not isinstance(payload, dict) or not all(isinstance(v, Tensor) for v in payload.values()):
        raise UserError(f"{source}: expected a state dict of tensors (plain, or under 'state_dict', "
                        f"'model' or 'classifier'), got {type(payload).__name__}")
    return {k.removeprefix("module."): v for k, v in payload.items()}


def _strip_head(weights: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v for k, v in weights.items() if not k.startswith(HEAD_PREFIXES)}


def _check_keys(weights: dict[str, Tensor], expected: dict[str, Tensor], source: str) -> None:
    """Raise on the first missing key, then the first shape mismatch, then the first unexpected key."""
    for key, ref in expected.items():
        if key not in weights:
            if key.endswith(OPTIONAL_SUFFIXES):
                continue
            raise UserError(f"{source}: missing backbone key '{key}' (a checkpoint of another backbone?)")
        if weights[key].shape != ref.shape:
            raise UserError(f"{source}: shape mismatch at '{key}': file {tuple(weights[key].shape)}, "
                            f"network {tuple(ref.shape)} (a checkpoint of another backbone?)")
    for key in weights:
        if key not in expected:
            raise UserError(f"{source}: unexpected key '{key}' (not part of the configured backbone)")
