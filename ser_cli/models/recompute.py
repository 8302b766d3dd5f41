"""Activation checkpointing of a backbone's blocks (`train.activation_checkpointing`): keep only each block's
input during the forward and recompute the block in the backward (torch.utils.checkpoint, non-reentrant), trading
about one more forward per step for the activation memory inside the blocks.

Recomputing a block in train mode would update its BatchNorm running statistics a second time; the recompute
therefore runs inside a context that puts them back as the first forward left them, so a checkpointed step leaves
the same weights and statistics as a plain one (tests/test_recompute.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


def recompute_in_backward(fn: Callable[[Tensor], Tensor], x: Tensor, modules: Sequence[nn.Module]) -> Tensor:
    """`fn(x)`, its intermediate activations recomputed in the backward instead of kept.

    Args:
        fn: The block's computation.
        x: Its input.
        modules: Every module `fn` runs whose BatchNorm statistics the recompute must leave untouched.
    """
    return checkpoint(fn, x, use_reentrant=False,
                      context_fn=lambda: (contextlib.nullcontext(), batchnorm_stats_kept(modules)))


@contextlib.contextmanager
def batchnorm_stats_kept(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Restore the running statistics (and batch counts) of the BatchNorm layers in `modules` on exit."""
    buffers = [b for module in modules for m in module.modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm) for b in m.buffers()]
    saved = [b.clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, value in zip(buffers, saved, strict=True):
                b.copy_(value)
