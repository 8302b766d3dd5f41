"""The state of every random number generator a training step may touch: capture, restore, and shield.

One on-disk format for both training stacks (`ser pretrain-saliency` and `ser train` checkpoints): python's state
as `[version, [ints], gauss_next]`, numpy's as a dict with the MT19937 keys in an int64 tensor, torch's CPU (and,
where CUDA was initialised, every device's) state as byte tensors. Only tensors and plain values, so a checkpoint
loads with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch


def capture_rng_state() -> dict[str, Any]:
    """The python, numpy, torch and (initialised) CUDA generator states, as checkpoint-safe values."""
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss_next],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back the generators captured by `capture_rng_state` (CUDA only where it was captured and present)."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def upgrade_legacy_rng_state(state: dict[str, Any]) -> dict[str, Any]:
    """A `ser train` checkpoint of format 1 stored numpy's state as a tuple and CUDA's always: convert it."""
    kind, keys, pos, has_gauss, cached = state["numpy"]
    version, internal, gauss_next = state["python"]
    upgraded = {"python": [version, list(internal), gauss_next], "torch": state["torch"],
                "numpy": {"kind": kind, "keys": keys, "pos": pos, "has_gauss": has_gauss, "cached_gaussian": cached}}
    if state.get("cuda"):
        upgraded["cuda"] = state["cuda"]
    return upgraded


@contextlib.contextmanager
def rng_preserved() -> Iterator[None]:
    """Run a block (e.g. a data loader's `next`) without letting it advance the python, numpy or torch CPU RNGs."""
    python_state, numpy_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)
