"""Multi-process runs launched by `torchrun`: detect the launch, join the process group, rank-aware helpers.

`torchrun --nproc_per_node=K -m ser_cli COMMAND ...` starts K copies of a command and tells each its place through
the environment (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`/`MASTER_PORT`; PyTorch's "torchrun (Elastic
Launch)" documentation). A plain `ser COMMAND` sees none of them and runs as rank 0 of 1, so every command works the
same with and without `torchrun`. The backend follows the nanoGPT / nanochat pattern: `nccl` when the ranks use CUDA
(one GPU per local rank), `gloo` on CPU. Only rank 0 shows progress and writes shared files (style.md, habit 9).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ser_cli.runtime.errors import UserError


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
    if not dist.is_initialized():
        return value
    # nccl reduces CUDA tensors only; gloo CPU tensors.
    where = device if dist.get_backend() == "nccl" else torch.device("cpu")
    total = torch.tensor([value], dtype=torch.float64, device=where)
    dist.all_reduce(total)
    return float(total.item())


def shutdown() -> None:
    """Leave the process group (no-op when none was joined)."""
    if dist.is_initialized():
        dist.destroy_process_group()
