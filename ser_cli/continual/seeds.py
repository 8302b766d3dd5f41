"""The keys of the continual run's random streams (the replay buffer, the in-memory data order) for `derive_seed`.

Each stream gets `SeedSequence([seed, *keys])` (numpy's hash-based seed derivation, designed so that nearby seeds
and keys give unrelated streams), so the buffer's draws do not depend on how many numbers weight initialisation or
dropout consumed, and `TensorTaskStream`'s order depends only on (seed, epoch, tasks).
"""

from __future__ import annotations

from ser_cli.runtime.seeding import derive_seed  # noqa: F401 - the streams below are its keys

BUFFER = 1
DATA_ORDER = 2
