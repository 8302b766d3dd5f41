"""Training seconds carried across interruptions: the seconds of earlier sessions plus this one's."""

from __future__ import annotations

import time


class TrainingClock:
    """Wall-clock training time of a resumable run (`before` = seconds recorded in its checkpoint)."""

    def __init__(self, before: float = 0.0) -> None:
        self.before, self.start = before, time.perf_counter()

    def total(self) -> float:
        return self.before + time.perf_counter() - self.start
