"""Independent seeds derived from the run seed, one per random stream (buffer, data order of each task and epoch).

Each stream gets `SeedSequence([seed, *keys])` (numpy's hash-based seed derivation, designed so that nearby seeds
and keys give unrelated streams). The data order of a task thus depends only on (seed, task, epoch), so a resumed
run rebuilds the same loader and skips the batches already consumed.
"""

from __future__ import annotations

import numpy as np

BUFFER = 1
DATA_ORDER = 2
JOINT_ORDER = 3


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for the stream named by `keys` (non-negative integers) under the run seed."""
    words = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])
