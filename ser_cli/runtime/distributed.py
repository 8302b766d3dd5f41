"""Multi-process runs launched by `torchrun`: detect the launch, join the process group, rank-aware helpers.

`torchrun --nproc_per_node=K -m ser_cli COMMAND ...` starts K copies of a command and tells each its place through
the environment (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`/`MASTER_PORT`; PyTorch's "torchrun (Elastic
Launch)" documentation). A plain `ser COMMAND` sees none of them and runs as rank 0 of 1, so every command works the
same with and without `torchrun`. The backend follows the nanoGPT / nanochat pattern: `nccl` when the ranks use CUDA
(one GPU per local rank), `gloo` on CPU. Only rank 0 shows progress and writes shared files (style.md, habit 9).

Two ways to split work, one helper each: fixed batches dealt round-robin (`rank_batches`; `ser precompute` and
`ser evaluate`, whose per-batch results `gather_to_main` + `interleave_batches` put back in one-process order, so
sums are folded in the same order and come out bit-identical), and data-parallel training (`wrap_ddp` around the
network, a `DistributedSampler` over the epoch's order, `all_sum_` for metrics; `ser pretrain-saliency`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from ser_cli.runtime.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly one-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that shows progress and writes shared outputs."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


ONE_PROCESS = DistInfo()


def detect() -> DistInfo:
    """Read the torchrun environment; a plain launch (no `WORLD_SIZE`) is rank 0 of 1."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise UserError("RANK / WORLD_SIZE / LOCAL_RANK: must be integers (set by torchrun)") from None
    if world < 1 or not 0 <= rank < world:
        raise UserError(f"RANK={rank}, WORLD_SIZE={world}: need 0 <= RANK < WORLD_SIZE (set by torchrun)")
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def rank_device(device: torch.device, info: DistInfo) -> torch.device:
    """The device of this rank: with several ranks on CUDA, each takes the GPU of its local rank."""
    if device.type != "cuda" or not info.is_distributed:
        return device
    if info.local_rank >= torch.cuda.device_count():
        raise UserError(
            f"LOCAL_RANK={info.local_rank}: only {torch.cuda.device_count()} CUDA device(s) on this node; "
            "lower --nproc_per_node"
        )
    return torch.device("cuda", info.local_rank)


def init(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun (no-op otherwise); returns this process's place."""
    info = detect()
    if info.is_distributed and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info


def barrier(device: torch.device) -> None:
    """Wait for every rank (no-op in a one-process run)."""
    if not dist.is_initialized():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[device.index or 0])
    else:
        dist.barrier()


def all_sum(value: float, device: torch.device) -> float:
    """Sum of `value` over all ranks (the value itself in a one-process run)."""
    return float(all_sum_(torch.tensor([value], dtype=torch.float64, device=device)).item())


def all_sum_(tensor: Tensor) -> Tensor:
    """Sum `tensor` over all ranks in place and return it (untouched in a one-process run)."""
    if not dist.is_initialized():
        return tensor
    # nccl reduces CUDA tensors only (init made this rank's GPU the current one); gloo CPU tensors.
    where = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    moved = tensor.to(where)
    dist.all_reduce(moved)
    return tensor.copy_(moved)


def gather_to_main(obj: T) -> list[T] | None:
    """Every rank's `obj` (picklable), in rank order, on rank 0; None on the other ranks. `[obj]` in one process."""
    if not dist.is_initialized():
        return [obj]
    gathered: list[T] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None  # type: ignore[list-item]
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def rank_batches(n: int, batch_size: int, rank: int, world_size: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of the batches of positions 0..n-1 that `rank` takes: fixed blocks of `batch_size`, dealt
    round-robin (batch k to rank k % K). A batch holds the same positions whatever K is, so a network whose output
    depends on the batch it runs in gives each image the same numbers on any number of ranks."""
    for start in range(rank * batch_size, n, batch_size * world_size):
        yield start, min(start + batch_size, n)


def rank_positions(n: int, batch_size: int, info: DistInfo) -> np.ndarray:
    """int64 (M,): the positions of this rank's batches (`rank_batches`), in order."""
    spans = [np.arange(a, b) for a, b in rank_batches(n, batch_size, info.rank, info.world_size)]
    return np.concatenate(spans) if spans else np.zeros(0, np.int64)


def interleave_batches(per_rank: Sequence[Sequence[T]]) -> list[T]:
    """Per-batch results of every rank (`gather_to_main` of `rank_batches` work) back in global batch order."""
    k = len(per_rank)
    total = sum(len(r) for r in per_rank)
    return [per_rank[i % k][i // k] for i in range(total)]


def sampler_share(rows: np.ndarray, info: DistInfo) -> np.ndarray:
    """This rank's part of `rows` (already in the order to visit them) as a `DistributedSampler` without shuffling
    deals it: padded by wrapping to a multiple of K, then every K-th. Rank r's b-th batch of size b plus the other
    ranks' b-th batches are positions [b*B*K, (b+1)*B*K) of `rows`: one process's b-th batch of size B*K. Every
    rank gets the same number of rows, so every rank takes the same number of optimiser steps (DDP needs it)."""
    if not info.is_distributed:
        return rows
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(len(rows)), num_replicas=info.world_size, rank=info.rank, shuffle=False)
    return rows[np.fromiter(sampler, np.int64, len(sampler))]


def wrap_ddp(net: nn.Module, device: torch.device, info: DistInfo) -> nn.Module:
    """`net` inside DistributedDataParallel when there are several ranks (gradients averaged over ranks after each
    backward; rank 0's weights broadcast at construction); `net` itself in a one-process run."""
    if not info.is_distributed:
        return net
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(net, device_ids=[device.index or 0] if device.type == "cuda" else None)


def shutdown() -> None:
    """Leave the process group (no-op when none was joined)."""
    if dist.is_initialized():
        dist.destroy_process_group()
