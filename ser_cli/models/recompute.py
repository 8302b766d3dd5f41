"""Activation checkpointing (`train.activation_checkpointing`): keep only the inputs of each backbone block (and of
each block of the saliency decoder) during the forward and recompute the rest in the backward
(torch.utils.checkpoint, non-reentrant), trading about one more forward per step for the activation memory inside
them. Block by block rather than a network at a time, because the backward then holds one block's recomputed
activations: the saliency decoder recomputed whole held 20 full-resolution feature maps (4.5 GB at 288x384).

Recomputing a block in train mode would update its BatchNorm running statistics a second time; the recompute
therefore runs inside a context that puts them back as the first forward left them, so a checkpointed step leaves
the same weights and statistics as a plain one (tests/test_recompute.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def recompute_in_backward(fn: Callable[..., Any], *inputs: Any, modules: Sequence[nn.Module]) -> Any:
    """`fn(*inputs)`, its intermediate activations recomputed in the backward instead of kept (random draws, e.g.
    dropout masks, are replayed: torch's checkpoint restores the RNG state for the recompute).

    Args:
        fn: The block's computation.
        inputs: Its inputs (tensors or lists of tensors).
        modules: Every module `fn` runs whose BatchNorm statistics the recompute must leave untouched.
    """
    return checkpoint(fn, *inputs, use_reentrant=False,
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
