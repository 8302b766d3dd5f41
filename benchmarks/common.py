"""What the benchmarks share: the registry, the result row, synthetic natural-looking images, timing.

Images are smooth multi-scale noise (a 1/f-like sum of upsampled random fields, the usual stand-in for natural
image statistics), so that JPEG and PNG compress them about as much as photographs, unlike white noise (which does
not compress) or flat colour (which compresses to nothing). Maps are a few Gaussian blobs, like fixation densities.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

BENCHMARKS: dict[str, Callable[[], list[Row]]] = {}
OCTAVES = (3, 6, 12, 24, 48, 96)  # coarsest to finest noise grid, in cells along the shorter side


@dataclass(frozen=True)
class Row:
    """One measurement: what was measured, its value and unit, and a note (setting or caveat)."""

    benchmark: str
    case: str
    value: float | None
    unit: str
    note: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def register_benchmark(name: str) -> Callable[[Callable[[], list[Row]]], Callable[[], list[Row]]]:
    """Register a benchmark under `name` (`python -m benchmarks NAME` runs it)."""

    def decorator(fn: Callable[[], list[Row]]) -> Callable[[], list[Row]]:
        BENCHMARKS[name] = fn
        return fn

    return decorator


def smooth_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """One (H, W, 3) uint8 image of smooth multi-scale coloured noise, amplitude halving per octave."""
    canvas = np.zeros((height, width, 3), np.float32)
    for k, cells in enumerate(OCTAVES):
        grid = rng.normal(size=(cells, max(1, cells * width // height), 3)).astype(np.float32)
        layer = np.stack([_upsample(grid[..., c], height, width) for c in range(3)], axis=-1)  # (H, W, 3)
        canvas += layer * 0.5**k
    canvas = (canvas - canvas.min()) / (np.ptp(canvas) + 1e-6) * 255
    return canvas.astype(np.uint8)


def _upsample(field: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.asarray(Image.fromarray(field, mode="F").resize((width, height), Image.Resampling.BICUBIC))


def blob_map(rng: np.random.Generator, height: int, width: int, n_blobs: int = 3) -> np.ndarray:
    """One (H, W) uint8 saliency map: a sum of Gaussian blobs, 255 at its maximum."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    density = np.zeros((height, width), np.float32)
    for _ in range(n_blobs):
        cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
        sigma = rng.uniform(0.05, 0.15) * width
        density += np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2))
    return np.round(density / density.max() * 255).astype(np.uint8)


def rate(items: Iterable[int], min_seconds: float) -> float:
    """Items per second over an iterable of batch sizes, timed after the first batch, repeated to `min_seconds`.

    `items` is consumed lazily; the caller passes an iterator that restarts epochs as long as it is asked to.
    """
    iterator = iter(items)
    next(iterator)  # warm-up: worker start, file opens, first-call allocations
    count, start = 0, time.perf_counter()
    for n in iterator:
        count += n
        if time.perf_counter() - start >= min_seconds:
            break
    return count / (time.perf_counter() - start)
