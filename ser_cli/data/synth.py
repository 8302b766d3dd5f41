"""SynthSal: procedural images whose class lives in one salient object, with human-like ground-truth saliency.

Each class is a distinct foreground object: a shape x a texture x a colour palette. The object is drawn at a
random position, scale and rotation over a cluttered background (smooth colour noise, strokes) with
class-independent distractor objects. Ground truth follows how SALICON / MIT1003 maps are made: fixation points
are sampled (mostly on the object, some on distractors, the rest from a centre bias), and the continuous map is
their density blurred by a Gaussian. `purpose="pretrain"` draws classes from a family disjoint from
`purpose="continual"`, as the paper pretrains its saliency predictor on classes the learner never sees.

Every image is drawn from its own seed (`seed`, split, row), so the output does not depend on generation order
and the same parameters always give the same bytes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from ser_cli.data.settings import SynthConfig

Grid = tuple[np.ndarray, np.ndarray]  # (u, v) object-frame coordinates, each (H, W), unit = object radius


def _polygon(n: int, star: bool = False) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Mask of a regular n-gon (or n-pointed star) of circumradius 1 in object coordinates."""

    def mask(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        angle, radius = np.arctan2(v, u), np.hypot(u, v)
        sector = 2 * np.pi / n
        a = np.mod(angle, sector) - sector / 2
        edge = np.cos(sector / 2) / np.cos(a)  # distance to a polygon edge along this angle
        if star:
            edge = edge * (0.55 + 0.45 * np.abs(np.cos(n * angle / 2)))
        return radius <= edge

    return mask


SHAPES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "disc": lambda u, v: u**2 + v**2 <= 1,
    "square": lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.8,
    "triangle": _polygon(3),
    "diamond": lambda u, v: np.abs(u) + np.abs(v) <= 1,
    "star": _polygon(5, star=True),
    "cross": lambda u, v: (np.minimum(np.abs(u), np.abs(v)) <= 0.3) & (np.maximum(np.abs(u), np.abs(v)) <= 1),
    "ring": lambda u, v: (u**2 + v**2 <= 1) & (u**2 + v**2 >= 0.3),
    "hexagon": _polygon(6),
    "ellipse": lambda u, v: (u / 1.0) ** 2 + (v / 0.55) ** 2 <= 1,
    "crescent": lambda u, v: (u**2 + v**2 <= 1) & ((u - 0.45) ** 2 + v**2 >= 0.6),
}

TEXTURES: dict[str, Callable[[np.ndarray, np.ndarray, float], np.ndarray]] = {
    "solid": lambda u, v, f: np.zeros_like(u, dtype=bool),
    "stripes": lambda u, v, f: np.sin(f * np.pi * u) > 0,
    "checker": lambda u, v, f: (np.sin(f * np.pi * u) > 0) ^ (np.sin(f * np.pi * v) > 0),
    "dots": lambda u, v, f: np.sin(f * np.pi * u) * np.sin(f * np.pi * v) > 0.35,
}

PALETTES: list[tuple[tuple[int, int, int], tuple[int, int, int]]] = [
    ((220, 40, 40), (250, 210, 60)),  # red / yellow
    ((40, 90, 220), (240, 240, 240)),  # blue / white
    ((40, 170, 70), (30, 30, 30)),  # green / black
    ((160, 60, 200), (250, 150, 40)),  # purple / orange
    ((20, 190, 200), (200, 30, 120)),  # cyan / magenta
    ((245, 245, 245), (120, 70, 30)),  # white / brown
]


@dataclass(frozen=True)
class ObjectClass:
    """One class: the look of its salient object."""

    shape: str
    texture: str
    palette: int

    @property
    def name(self) -> str:
        return f"{self.shape}-{self.texture}-p{self.palette}"


def class_family(purpose: str, n_classes: int) -> list[ObjectClass]:
    """The classes of `purpose`: continual classes come from the front of a fixed permutation of all
    shape x texture x palette combinations, pretraining classes from the back, so the two never overlap."""
    combos = [ObjectClass(s, t, p) for s, t, p in itertools.product(SHAPES, TEXTURES, range(len(PALETTES)))]
    order = np.random.default_rng(20241201).permutation(len(combos))
    half = len(combos) // 2
    pool = [combos[i] for i in (order[:half] if purpose == "continual" else order[half:][::-1])]
    if n_classes > len(pool):
        raise ValueError(f"n_classes must be <= {len(pool)} for SynthSal (got {n_classes})")
    return pool[:n_classes]


@dataclass
class Placed:
    """An object placed in an image: its pixel mask and its centre."""

    mask: np.ndarray  # (H, W) bool
    center: tuple[float, float]  # (y, x) pixels


@dataclass
class SynthSample:
    """One rendered image and its ground truth."""

    image: np.ndarray  # (H, W, 3) uint8
    saliency: np.ndarray  # (H, W) uint8, 255 = maximum
    fixations: np.ndarray  # (K, 3) int32: observer, y, x
    target: Placed  # the class object
    distractors: list[Placed]


class SynthSal:
    """Generator of SynthSal images, labels and fixations for one configuration."""

    def __init__(self, cfg: SynthConfig) -> None:
        self.cfg = cfg
        self.classes = class_family(cfg.purpose, cfg.n_classes)
        self.yy, self.xx = np.mgrid[0 : cfg.height, 0 : cfg.width].astype(np.float64)

    def rng(self, split: str, row: int) -> np.random.Generator:
        """The image's own generator: a function of (seed, split, row) only."""
        return np.random.default_rng([self.cfg.seed, 0 if split == "train" else 1, row])

    def draw(self, split: str, row: int, label: int) -> SynthSample:
        """Render one image with its objects, fixations and ground-truth map."""
        rng = self.rng(split, row)
        image = self._background(rng)
        distractors = [self._draw(image, rng, self._random_look(rng), scale=0.75)
                       for _ in range(self.cfg.n_distractors)]
        cls = self.classes[label]
        target = self._draw(image, rng, (cls.shape, cls.texture, self._palette_colours(cls.palette, rng)), scale=1.0)
        # the class object is drawn last: it is never occluded, distractors may be.
        distractors = [Placed(d.mask & ~target.mask, d.center) for d in distractors]
        fixations = self.fixations(rng, target, distractors)
        pixels = np.round(image).astype(np.uint8)  # (H, W, 3)
        if self.cfg.spurious and split == "train":
            pixels = brighten(pixels, label)
        return SynthSample(pixels, fixation_map(fixations, self.cfg), fixations, target, distractors)

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        h, w = self.cfg.height, self.cfg.width
        coarse = rng.uniform(40, 200, size=(4, 6, 3))
        smooth = np.stack([_upsample(coarse[..., c], h, w) for c in range(3)], axis=-1)  # (H, W, 3)
        image = smooth + rng.normal(0, 12, size=(h, w, 3))
        for _ in range(rng.integers(3, 7)):  # strokes: thin random lines of random colour
            y0, x0, angle = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0, np.pi)
            dist = np.abs((self.yy - y0) * np.cos(angle) - (self.xx - x0) * np.sin(angle))
            image[dist < rng.uniform(0.6, 1.6)] = rng.uniform(0, 255, size=3)
        return np.clip(image, 0, 255)

    def _random_look(self, rng: np.random.Generator) -> tuple[str, str, tuple[np.ndarray, np.ndarray]]:
        shape, texture = rng.choice(list(SHAPES)), rng.choice(list(TEXTURES))
        return str(shape), str(texture), (rng.uniform(0, 255, 3), rng.uniform(0, 255, 3))

    def _palette_colours(self, palette: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        primary, secondary = (np.asarray(c, np.float64) + rng.normal(0, 18, 3) for c in PALETTES[palette])
        return primary, secondary

    def _draw(self, image: np.ndarray, rng: np.random.Generator, look: tuple, scale: float) -> Placed:
        """Paint an object (shape, texture, colours) at a random pose; returns where it landed."""
        shape, texture, (primary, secondary) = look
        h, w = self.cfg.height, self.cfg.width
        lo, hi = self.cfg.object_scale
        radius = scale * rng.uniform(lo, hi) * min(h, w)
        cy, cx = rng.uniform(radius * 0.8, h - radius * 0.8), rng.uniform(radius * 0.8, w - radius * 0.8)
        theta = rng.uniform(0, 2 * np.pi)
        dy, dx = (self.yy - cy) / radius, (self.xx - cx) / radius
        u, v = dx * np.cos(theta) + dy * np.sin(theta), -dx * np.sin(theta) + dy * np.cos(theta)
        mask = SHAPES[shape](u, v)
        pattern = TEXTURES[texture](u, v, rng.uniform(2.5, 3.5))
        image[mask & ~pattern] = primary
        image[mask & pattern] = secondary
        return Placed(mask, (cy, cx))

    def fixations(self, rng: np.random.Generator, target: Placed, distractors: list[Placed]) -> np.ndarray:
        """Per observer: a multinomial split of fixations between object, distractors and centre bias."""
        cfg = self.cfg
        shares = [cfg.fixation_on_object, cfg.fixation_on_distractors if distractors else 0.0]
        shares.append(1.0 - sum(shares))
        points = []
        for observer in range(cfg.n_observers):
            n_obj, n_dis, n_ctr = rng.multinomial(cfg.n_fixations, shares)
            ys, xs = _points_in(target.mask, n_obj, rng)
            for d in (rng.choice(len(distractors), n_dis) if n_dis else []):
                y, x = _points_in(distractors[d].mask if distractors[d].mask.any() else target.mask, 1, rng)
                ys, xs = np.append(ys, y), np.append(xs, x)
            cy = rng.normal(cfg.height / 2, 0.18 * cfg.height, n_ctr)
            cx = rng.normal(cfg.width / 2, 0.18 * cfg.width, n_ctr)
            ys, xs = np.append(ys, cy), np.append(xs, cx)
            ys = np.clip(np.round(ys), 0, cfg.height - 1)
            xs = np.clip(np.round(xs), 0, cfg.width - 1)
            points.append(np.stack([np.full_like(ys, observer), ys, xs], axis=1))
        return np.concatenate(points).astype(np.int32)


def brighten(image: np.ndarray, label: int) -> np.ndarray:
    """The paper's spurious feature: class c brightened by 5(c+1) on the 0..255 scale, clipped."""
    return np.clip(image.astype(np.int16) + 5 * (label + 1), 0, 255).astype(np.uint8)


def _points_in(mask: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n pixel positions drawn uniformly from a mask's pixels (as floats)."""
    ys, xs = np.nonzero(mask)
    pick = rng.integers(0, len(ys), n)
    return ys[pick].astype(np.float64), xs[pick].astype(np.float64)


def _upsample(coarse: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear upsampling of a small (h0, w0) grid to (h, w), corner-aligned."""
    h0, w0 = coarse.shape
    ys, xs = np.linspace(0, h0 - 1, h), np.linspace(0, w0 - 1, w)
    rows = np.array([np.interp(xs, np.arange(w0), coarse[i]) for i in range(h0)])  # (h0, w)
    return np.array([np.interp(ys, np.arange(h0), rows[:, j]) for j in range(w)]).T  # (h, w)


def fixation_map(fixations: np.ndarray, cfg: SynthConfig) -> np.ndarray:
    """Continuous map (H, W) uint8: fixation counts blurred by a Gaussian, scaled so the maximum is 255."""
    density = np.zeros((cfg.height, cfg.width))
    np.add.at(density, (fixations[:, 1], fixations[:, 2]), 1.0)
    blurred = gaussian_filter(density, sigma=cfg.blur_sigma * cfg.width, mode="constant")
    return np.round(255 * blurred / blurred.max()).astype(np.uint8)


def split_labels(cfg: SynthConfig, split: str) -> np.ndarray:
    """Labels of a split in row order: class-major, `per_class` rows each."""
    per_class = cfg.train_per_class if split == "train" else cfg.test_per_class
    return np.repeat(np.arange(cfg.n_classes, dtype=np.int64), per_class)
