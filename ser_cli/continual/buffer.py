"""Replay buffer with reservoir sampling over the whole stream (Vitter, ACM TOMS 1985; as in Mammoth's `Buffer`).

Every stream sample seen so far has the same probability `capacity / seen` of being in the buffer. The n-th sample
(0-based) goes to slot n while the buffer is not full; afterwards a uniform draw r in [0, n] replaces slot r if
r < capacity. A whole batch is decided at once on the device: one draw per sample from the buffer's own
`torch.Generator`, and when two samples of a batch pick the same slot the later one wins, exactly as the
sequential algorithm would leave it. Skipped samples are written to one extra scratch row, so an update needs no
host-device synchronisation. Images are stored as uint8 (normalised when replayed), with labels, task ids and,
for DER/DER++, the stream logits. Draws are uniform without replacement among the filled slots (method.md
section 4).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ser_cli.runtime.errors import UserError
from ser_cli.runtime.memory import available_bytes, gigabytes


def reservoir_slots(positions: Tensor, draws: Tensor, capacity: int) -> Tensor:
    """Reservoir decision for each sample of a batch, with the last write to a slot winning.

    Args:
        positions: 0-based stream position of each sample, increasing, (B,).
        draws: Uniform integer in [0, position] for each sample, (B,).
        capacity: Number of slots.

    Returns:
        (B,) destination slot of each sample; `capacity` (the scratch row) for samples that are not kept,
        including those overwritten later in the same batch.
    """
    slots = torch.where(positions < capacity, positions, draws)  # (B,)
    slots = torch.where(slots < capacity, slots, torch.full_like(slots, capacity))
    # A stable sort keeps batch order inside each group of equal slots: the last of a group is the final write.
    sorted_slots, order = torch.sort(slots, stable=True)
    is_last = torch.ones_like(sorted_slots, dtype=torch.bool)
    is_last[:-1] = sorted_slots[1:] != sorted_slots[:-1]
    wins = torch.empty_like(is_last).scatter_(0, order, is_last)  # back to batch order
    return torch.where(wins, slots, torch.full_like(slots, capacity))


class ReservoirBuffer:
    """Fixed-capacity replay memory on one device, filled by reservoir sampling."""

    def __init__(
        self,
        capacity: int,
        image_shape: tuple[int, int, int],
        device: torch.device | str,
        store_logits: int | None = None,
        seed: int = 0,
    ) -> None:
        """Allocate the storage up front (an out-of-memory error shows at start, not after hours).

        Args:
            capacity: Number of samples kept.
            image_shape: (3, H, W) of the stream images.
            device: Where the samples live and where the decisions and draws are computed.
            store_logits: Width of the stored logits (DER, DER++), or None to store none.
            seed: Seed of the buffer's generator (reservoir decisions and replay draws).

        Raises:
            UserError: capacity below 1, or more bytes than the device has available.
        """
        if capacity < 1:
            raise UserError(f"train.buffer_size must be >= 1 for a replay method, got {capacity}")
        self.capacity = capacity
        self.device = torch.device(device)
        _check_fits(capacity, image_shape, store_logits, self.device)
        rows = capacity + 1  # the last row is scratch: samples that are not kept are written there
        self.images = torch.zeros((rows, *image_shape), dtype=torch.uint8, device=self.device)
        self.labels = torch.zeros(rows, dtype=torch.int64, device=self.device)
        self.tasks = torch.zeros(rows, dtype=torch.int64, device=self.device)
        self.logits = None
        if store_logits is not None:
            self.logits = torch.zeros((rows, store_logits), dtype=torch.float32, device=self.device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self.seen = 0

    @property
    def filled(self) -> int:
        """Number of occupied slots."""
        return min(self.seen, self.capacity)

    def __len__(self) -> int:
        return self.filled

    @property
    def nbytes(self) -> int:
        """Bytes of device memory held by the stored fields (scratch row included)."""
        return sum(t.numel() * t.element_size() for t in self._fields().values())

    def _fields(self) -> dict[str, Tensor]:
        fields = {"images": self.images, "labels": self.labels, "tasks": self.tasks}
        if self.logits is not None:
            fields["logits"] = self.logits
        return fields

    def add(self, images: Tensor, labels: Tensor, task: int, logits: Tensor | None = None) -> None:
        """Offer a stream batch to the reservoir.

        Args:
            images: uint8 (B, 3, H, W).
            labels: int64 (B,).
            task: Task id of the whole batch.
            logits: (B, K) stream logits; required iff the buffer stores logits.
        """
        if (logits is None) != (self.logits is None):
            raise ValueError("logits must be given exactly when the buffer stores them")
        dest = self._destinations(labels)  # (B,)
        self.images.index_copy_(0, dest, images.to(self.device))
        self.labels.index_copy_(0, dest, labels.to(self.device))
        self.tasks.index_copy_(0, dest, torch.full_like(dest, task))
        if self.logits is not None:
            self.logits.index_copy_(0, dest, logits.detach().to(self.device, torch.float32))

    def _destinations(self, labels: Tensor) -> Tensor:
        """Slot of each sample of a batch with `labels` (B,): the scratch row `capacity` for those not kept."""
        batch = labels.shape[0]
        positions = torch.arange(self.seen, self.seen + batch, device=self.device)  # (B,)
        uniform = torch.rand(batch, generator=self.generator, device=self.device, dtype=torch.float64)
        # floor(u * (n + 1)) is uniform on 0..n; the clamp guards the rounding of u * (n + 1) up to n + 1.
        draws = torch.minimum((uniform * (positions + 1)).long(), positions)
        self.seen += batch
        return reservoir_slots(positions, draws, self.capacity)

    def sample(self, n: int) -> dict[str, Tensor]:
        """Draw `min(n, filled)` distinct samples uniformly.

        Args:
            n: Requested number of samples.

        Returns:
            `images` uint8 (n, 3, H, W), `labels` (n,), `tasks` (n,) and, if stored, `logits` (n, K).
        """
        n = min(n, self.filled)
        index = torch.randperm(self.filled, generator=self.generator, device=self.device)[:n]  # (n,)
        return {name: field[index] for name, field in self._fields().items()}

    def state_dict(self) -> dict[str, Any]:
        """CPU copies of the filled slots, the counters and the generator state."""
        rows = {name: field[: self.filled].to("cpu", copy=True) for name, field in self._fields().items()}
        return {"capacity": self.capacity, "seen": self.seen, "generator": self.generator.get_state(), **rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict()` taken from a buffer of the same capacity and shapes.

        Raises:
            UserError: the state comes from a buffer of another capacity or field layout.
        """
        if state["capacity"] != self.capacity or set(state) - {"capacity", "seen", "generator"} != set(self._fields()):
            raise UserError(
                f"checkpoint buffer (capacity {state['capacity']}) does not match this run's buffer "
                f"(capacity {self.capacity}, fields {sorted(self._fields())})"
            )
        self.seen = int(state["seen"])
        for name, field in self._fields().items():
            field.zero_()
            field[: self.filled].copy_(state[name])
        self.generator.set_state(state["generator"])


def buffer_bytes(capacity: int, image_shape: tuple[int, int, int], store_logits: int | None) -> int:
    """Bytes a buffer of `capacity` samples holds (uint8 images, int64 labels and tasks, float32 logits)."""
    per_sample = math.prod(image_shape) + 8 + 8 + 4 * (store_logits or 0)
    return (capacity + 1) * per_sample


def _check_fits(capacity: int, image_shape: tuple[int, int, int], store_logits: int | None,
                device: torch.device) -> None:
    # torch.zeros on the CPU maps pages lazily: without this check a huge buffer fails hours later, mid-task.
    needed, free = buffer_bytes(capacity, image_shape, store_logits), available_bytes(device)
    if free is not None and needed > free:
        raise UserError(f"train.buffer_size={capacity}: the replay buffer needs {gigabytes(needed)} of {device} "
                        f"memory, {gigabytes(free)} is available; lower train.buffer_size")
