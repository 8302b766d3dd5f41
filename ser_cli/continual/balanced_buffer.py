"""Class-balanced replay buffer: equal slots for every class seen so far (CoPE's memory; De Lange & Tuytelaars, ICCV
2021), with the class-balancing reservoir rule of CBRS (Chrysakis & Moens, "Online Continual Learning from Imbalanced
Data", ICML 2020).

Samples are decided one by one in batch order. While the buffer has free slots a sample takes the next one. Once it
is full, a sample of class y:
- if y is not one of the largest classes in the buffer, replaces a uniformly drawn sample of the largest class (the
  lowest label among equally large ones), so a new class takes its share from the classes that hold the most;
- otherwise it is kept with probability m_y / n_y (m_y samples of y stored, n_y seen so far), replacing a uniformly
  drawn sample of its own class: a reservoir within the class.
So in a class-incremental stream every seen class ends up with the same number of slots (to within one). Storage,
replay draws (uniform without replacement among the filled slots), the scratch row and the seeded generator are
`ReservoirBuffer`'s; the decisions use two uniforms per sample from that generator, drawn for the whole batch at
once, and the per-class counts are kept on the host (one host copy of the batch's labels per batch). When two
samples of a batch end in the same slot the later one wins, as the sequential rule leaves it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch import Tensor

from ser_cli.continual.buffer import ReservoirBuffer


class ClassBalancedBuffer(ReservoirBuffer):
    """A `ReservoirBuffer` whose slots are shared equally among the classes seen so far."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """As `ReservoirBuffer`."""
        super().__init__(*args, **kwargs)
        self.class_seen: dict[int, int] = {}  # stream samples seen per class (n_y)
        self._slot_labels: list[int] = []  # host copy of labels[:filled]
        self._counts: Counter[int] = Counter()  # samples stored per class (m_y)

    def _destinations(self, labels: Tensor) -> Tensor:
        draws = torch.rand((len(labels), 2), generator=self.generator, device=self.device, dtype=torch.float64)
        slots = [self._place(y, u_slot, u_keep) for y, (u_slot, u_keep) in zip(labels.tolist(), draws.tolist(),
                                                                                 strict=True)]
        self.seen += len(slots)
        return torch.tensor(_last_write_wins(slots, self.capacity), dtype=torch.int64, device=self.device)

    def _place(self, y: int, u_slot: float, u_keep: float) -> int:
        """The slot sample `y` goes to (`capacity`: not kept), given two uniforms; updates the counts."""
        self.class_seen[y] = self.class_seen.get(y, 0) + 1
        if len(self._slot_labels) < self.capacity:
            self._slot_labels.append(y)
            self._counts[y] += 1
            return len(self._slot_labels) - 1
        largest = max(self._counts.values())
        if self._counts[y] < largest:
            victim = min(c for c, n in self._counts.items() if n == largest)
        elif u_keep < self._counts[y] / self.class_seen[y]:
            victim = y
        else:
            return self.capacity
        slots = [i for i, c in enumerate(self._slot_labels) if c == victim]
        slot = slots[min(int(u_slot * len(slots)), len(slots) - 1)]
        self._slot_labels[slot] = y
        self._counts[victim] -= 1
        self._counts[y] += 1
        return slot

    def class_counts(self) -> dict[int, int]:
        """Samples stored per class."""
        return {c: n for c, n in sorted(self._counts.items()) if n}

    def state_dict(self) -> dict[str, Any]:
        """`ReservoirBuffer`'s state plus the per-class counts of seen samples."""
        return {**super().state_dict(), "class_seen": dict(self.class_seen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict()` of a class-balanced buffer of the same capacity and shapes."""
        state = dict(state)
        self.class_seen = {int(c): int(n) for c, n in state.pop("class_seen").items()}
        super().load_state_dict(state)
        self._slot_labels = self.labels[: self.filled].tolist()
        self._counts = Counter(self._slot_labels)


def _last_write_wins(slots: list[int], capacity: int) -> list[int]:
    """Send every earlier write to a slot that a later sample of the batch also writes to the scratch row."""
    out, taken = list(slots), set()
    for i in reversed(range(len(out))):
        if out[i] in taken:
            out[i] = capacity
        taken.add(out[i])
    return out
