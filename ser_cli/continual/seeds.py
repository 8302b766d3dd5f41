"""Independent seeds derived from the run seed, one per random stream (the replay buffer, the in-memory data order).

Each stream gets `SeedSequence([seed, *keys])` (numpy's hash-based seed derivation, designed so that nearby seeds
and keys give unrelated streams), so the buffer's draws do not depend on how many numbers weight initialisation or
dropout consumed, and `TensorTaskStream`'s order depends only on (seed, epoch, tasks).
"""

from __future__ import annotations

import numpy as np

BUFFER = 1
DATA_ORDER = 2


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for the stream named by `keys` (non-negative integers) under the run seed."""
    words = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])
