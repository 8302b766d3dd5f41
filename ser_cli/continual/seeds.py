"""The keys of the continual run's random streams (the replay buffer, the in-memory data order) for `derive_seed`.

Each stream gets `SeedSequence([seed, *keys])` (numpy's hash-based seed derivation, designed so that nearby seeds
and keys give unrelated streams), so the buffer's draws do not depend on how many numbers weight initialisation or
dropout consumed, and `TensorTaskStream`'s order depends only on (seed, epoch, tasks).
"""

from __future__ import annotations

import torch

from ser_cli.runtime.seeding import derive_seed, seed_everything

BUFFER = 1
DATA_ORDER = 2
# The networks' initial weights. Not `torch.manual_seed(seed)` itself: `ser pretrain-saliency` builds its network
# right after `torch.manual_seed(saliency.seed)`, and the classifier is the same ResNet, so with equal seeds a
# "random" SER classifier was bit for bit the saliency encoder's initialisation (every seed-0 run before
# 2026-12-02): its features correlated with the saliency features it is multiplied by.
WEIGHTS = 3


def seed_run(seed: int) -> None:
    """Seed a continual run: everything from `seed`, then torch's generator for the networks' initial weights from
    their own stream (`WEIGHTS`), which the networks are built from next."""
    seed_everything(seed)
    torch.manual_seed(derive_seed(seed, WEIGHTS))
