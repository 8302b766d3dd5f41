"""Seed every random number generator a run touches (python, numpy, torch CPU and CUDA), and derive independent
seeds for named random streams.

`derive_seed(seed, *keys)` gives each stream `SeedSequence([seed, *keys])` (numpy's hash-based seed derivation,
designed so that nearby seeds and keys give unrelated streams): a replay buffer's draws or a data order then do not
depend on how many numbers weight initialisation or dropout consumed.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Same seed, same device, same result: seed python, numpy and torch, and ask for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for the random stream named by `keys` (non-negative integers) under the run seed."""
    words = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])
