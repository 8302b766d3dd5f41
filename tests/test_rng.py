"""`runtime.rng`: one RNG-state format for both training stacks; restore repeats the draws, also through a
weights-only checkpoint file, and a format-1 `ser train` state (numpy as a tuple) is upgraded to the same draws."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ser_cli.runtime.rng import capture_rng_state, restore_rng_state, rng_preserved, upgrade_legacy_rng_state


def _draws() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_restore_repeats_the_draws_after_a_weights_only_round_trip(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    _draws()
    torch.save(capture_rng_state(), tmp_path / "rng.pt")
    first = _draws()
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert _draws() == first


def test_format_1_state_is_upgraded_to_the_same_draws() -> None:
    np.random.seed(5), random.seed(6), torch.manual_seed(7)
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    legacy = {"python": random.getstate(), "torch": torch.get_rng_state(), "cuda": [],
              "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))}
    first = _draws()
    restore_rng_state(upgrade_legacy_rng_state(legacy))
    assert _draws() == first


def test_preserved_block_does_not_advance_the_generators() -> None:
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    expected = _draws()
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    with rng_preserved():
        _draws()
    assert _draws() == expected
