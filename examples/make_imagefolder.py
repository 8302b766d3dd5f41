"""Write a tiny image folder of PNGs (`OUT/train/<class>/*.png`, `OUT/test/<class>/*.png`) to try the README's
"your own images" recipe without a dataset: each class is a shape of its own colour at a random place on noise.

    python examples/make_imagefolder.py imgs --classes 4 --size 150x200 --train 16 --test 6
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def make_image(label: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """An (H, W, 3) uint8 image: noise plus the class's coloured square at a random place."""
    image = rng.integers(0, 90, (height, width, 3), dtype=np.uint8)
    side = min(height, width) // 3
    y, x = rng.integers(0, height - side), rng.integers(0, width - side)
    colour = np.array([(53 * label) % 256, (97 * label + 80) % 256, (151 * label + 160) % 256], np.uint8)
    image[y : y + side, x : x + side] = colour
    return image


def main(out: Path, classes: int, height: int, width: int, train: int, test: int, seed: int = 0) -> None:
    """Write `train` and `test` images per class."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("test", test)):
        for label in range(classes):
            folder = out / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(make_image(label, height, width, rng)).save(folder / f"{i:04d}.png")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--size", default="150x200", help="HEIGHTxWIDTH of the images")
    parser.add_argument("--train", type=int, default=16, help="training images per class")
    parser.add_argument("--test", type=int, default=6, help="test images per class")
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    main(args.out, args.classes, h, w, args.train, args.test)
