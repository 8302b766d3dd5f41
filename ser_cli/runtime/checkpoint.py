"""Atomic, resumable training checkpoints: one file holding the training state and every RNG state.

A checkpoint is written to `NAME.partial`, flushed to disk (fsync) and renamed over `NAME` (POSIX `rename` is
atomic), so a process killed at any instant, `kill -9` included, leaves either the previous checkpoint or the new
one, never a torn file. RNG states (`runtime.rng`) are stored as tensors and plain values, so
the file loads with `torch.load(weights_only=True)` and resuming never unpickles code. With a data order that is a
function of (seed, epoch) and the RNG states restored, a resumed run repeats an uninterrupted one bit for bit on
CPU (the same guarantee PyTorch's reproducibility notes give for one device and one build).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from ser_cli.runtime.atomic import atomic_path, remove_stale_temporaries
from ser_cli.runtime.errors import RunFailure, UserError
from ser_cli.runtime.progress import log
from ser_cli.runtime.torch_file import read_torch_file


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` atomically and durably (temporary name, fsync, rename).

    Args:
        path: Destination, e.g. `runs/saliency/checkpoint.pt`.
        state: Tensors, state dicts and plain values (anything `torch.load(weights_only=True)` reads back).
    """
    try:
        with atomic_path(path, fsync=True) as tmp:
            torch.save(state, tmp)
    except RuntimeError as err:  # torch's zip writer reports a full disk as "file write failed", not as ENOSPC
        if not any(word in str(err) for word in ("inline_container", "PytorchStreamWriter", "write")):
            raise
        raise RunFailure(f"{path}: could not be written ({str(err).splitlines()[-1].strip()[:80]}); no space left on "
                         "the device? free some space and rerun: the previous file is kept") from None


def load_checkpoint(path: Path, expected_keys: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The state saved at `path` (tensors on the CPU), or None when there is none or it is unreadable.

    An unreadable file (torn, garbage, or a pickle that is not weights-only) is never deleted: it is renamed to
    `NAME.corrupt-<time>` with one line on stderr, and the run starts from zero.

    Raises:
        UserError: a readable checkpoint of another kind (it lacks one of `expected_keys`).
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        return _set_aside(path, f"unreadable ({type(err).__name__})")
    if not isinstance(state, dict):
        return _set_aside(path, "not a training checkpoint")
    missing = [k for k in expected_keys if k not in state]
    if missing:
        raise UserError(f"{path}: not a checkpoint of this command (expected keys {', '.join(expected_keys)}; "
                        f"missing {', '.join(missing)}); move it away to start over")
    return state


def load_resumable(path: Path, identity: dict[str, Any], expected_keys: tuple[str, ...] = (),
                   restart: bool = False) -> dict[str, Any] | None:
    """The checkpoint an interrupted run of the same inputs and settings left at `path`, or None to start from zero
    (there is none, it was unreadable and set aside, or `restart` discarded it).

    The checkpoint must hold `identity` (what the run depends on) under the key "identity" and `expected_keys`.

    Raises:
        UserError: it was left by a run of other inputs or settings (naming the first difference).
    """
    path = Path(path)
    if restart and path.is_file():
        path.unlink()
        log(f"{path}: discarded (--restart); starting from zero")
        return None
    saved = load_checkpoint(path, expected_keys=("identity", *expected_keys))
    if saved is not None:
        check_same_identity(path, saved["identity"], identity)
    return saved


def _set_aside(path: Path, why: str) -> None:
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, aside)
    log(f"{path}: {why}; kept as {aside.name}, starting from zero")
    return None


def check_same_identity(path: Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """UserError naming the first input or setting in which a checkpoint's run differs from this invocation's."""
    old, new = _flat(saved), _flat(current)
    for key in sorted(old.keys() | new.keys()):
        if old.get(key) != new.get(key):
            raise UserError(f"{path}: left by an interrupted run with another {key} ({old.get(key)!r}, now "
                            f"{new.get(key)!r}); rerun with the same inputs, or pass --restart to start over")


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat.update(_flat(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint and the temporary files of it a killed run left (after a run completed)."""
    Path(path).unlink(missing_ok=True)
    remove_stale_temporaries(Path(path))


def load_artifact(path: Path, kind: str, format_version: int, made_by: str, what: str,
                  device: torch.device | str = "cpu") -> dict[str, Any]:
    """A finished artefact (`model.pt` of a stage): checked to exist, to load, to be `kind`, and not too new.

    Raises:
        UserError: one line naming the file and what is wrong with it.
    """
    path = Path(path)
    payload = read_torch_file(path, missing=f"{what} not found; it is written by `{made_by}`", device=device)
    if not isinstance(payload, dict) or payload.get("kind") != kind:
        raise UserError(f"{path}: not a model written by `{made_by}`")
    check_format_version(path, payload, format_version)
    return payload


def check_format_version(path: Path, payload: dict[str, Any], format_version: int) -> None:
    """UserError unless the payload's `format_version` is an integer from 1 to `format_version`."""
    version = payload.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UserError(f"{path}: format_version {version!r} is not one ser writes; the file is damaged or crafted")
    if version > format_version:
        raise UserError(f"{path}: format {version} is newer than this ser supports; upgrade ser")


def first_nonfinite(state: Any, prefix: str = "") -> str | None:
    """The name of the first floating-point tensor holding NaN or inf in a (nested) state dict, or None."""
    if isinstance(state, torch.Tensor):
        return prefix or "tensor" if state.is_floating_point() and not bool(torch.isfinite(state).all()) else None
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, (list, tuple)) else ()
    for key, value in items:
        found = first_nonfinite(value, f"{prefix}.{key}" if prefix else str(key))
        if found is not None:
            return found
    return None


def refuse_nonfinite(state: Any, what: str) -> None:
    """RunFailure `WHAT NAME holds NaN or inf` when `first_nonfinite` finds one (a diverged training's weights)."""
    bad = first_nonfinite(state)
    if bad is not None:
        raise RunFailure(f"{what} {bad} holds NaN or inf (the training diverged); lower the learning rate")
