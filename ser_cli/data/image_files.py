"""Image files named on the command line (`ser predict IMAGES...`): expansion, output names and decoding.

Each argument is a file, a folder (searched recursively, hidden entries skipped, sorted) or a glob pattern (`*`, `?`,
`[...]`, `**` recursive; sorted). Folders and patterns yield JPEG and PNG files by suffix; a file named explicitly is
always tried. Every image gets an output name that no other image shares: its stem when unique, else its path
relative to the common folder of all inputs with `/` written as `__` (`sub_dir/img.jpg` -> `sub_dir__img`), so
two `img.jpg` from different folders never overwrite each other. Decoding accepts only JPEG and PNG in modes that
convert to RGB without loss of meaning (16-bit and float greyscale are refused); a bad file is a one-line
`UserError` naming it, which the caller may report and skip.
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from ser_cli.runtime.errors import UserError

SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
FORMATS = frozenset({"JPEG", "PNG"})
MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})
OUTPUT_SUFFIXES = ("", "_overlay")  # NAME.png and NAME_overlay.png
MAX_PIXELS = 50_000_000  # a 50-megapixel photo decodes to 150 MB; beyond, a map at that size is not worth the memory


@dataclass(frozen=True)
class ImageFile:
    """One input image: where it is and the output name (no suffix) its maps are written under."""

    path: Path
    name: str


def find_images(args: list[str]) -> tuple[list[ImageFile], list[Path]]:
    """Expand `args` into named images (first occurrence of a file wins) and the paths the user named.

    Raises:
        UserError: an argument that is no file, folder or matching pattern, or no image at all.
    """
    paths: dict[Path, Path] = {}  # absolute -> as found, in order
    roots: list[Path] = []
    for arg in args:
        for path, root in _expand(arg):
            paths.setdefault(path.absolute(), path)
            roots.append(root)
    if not paths:
        raise UserError(f"no JPEG or PNG images found in {' '.join(args) or '(no IMAGES given)'}")
    found = list(paths.values())
    return [ImageFile(p, n) for p, n in zip(found, output_names(found), strict=True)], list(dict.fromkeys(roots))


def _expand(arg: str) -> Iterator[tuple[Path, Path]]:
    """(image, the input path it came from) for one argument."""
    path = Path(arg)
    if path.is_dir():
        yield from ((p, path) for p in _walk(path))
    elif path.exists():
        yield path, path
    elif any(c in arg for c in "*?["):
        matches = sorted(glob.glob(arg, recursive=True))
        if not matches:
            raise UserError(f"{arg}: the pattern matches no file")
        for match in map(Path, matches):
            if match.is_dir():
                yield from ((p, match) for p in _walk(match))
            elif match.suffix.lower() in SUFFIXES:
                yield match, match
    else:
        raise UserError(f"{arg}: no such file or folder")


def _walk(folder: Path) -> list[Path]:
    """JPEG and PNG files under `folder`, recursively, hidden files and folders skipped, sorted by path."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        # regular files only: opening a FIFO named `x.png` would block forever
        found += [Path(dirpath, f) for f in filenames
                  if not f.startswith(".") and Path(f).suffix.lower() in SUFFIXES and Path(dirpath, f).is_file()]
    return sorted(found)


def output_names(paths: list[Path]) -> list[str]:
    """A distinct output name per path: the stem, or the relative path (`a__b__img`) for stems that repeat.

    Names are compared case-insensitively (case-insensitive file systems), and with their `_overlay` twin, so that
    `x.jpg` and `x_overlay.jpg` do not collide either; what still collides gets the suffix, then a counter.
    """
    stems = Counter(p.stem.lower() for p in paths)
    base = Path(os.path.commonpath([p.absolute().parent for p in paths]))
    taken: set[str] = set()
    names = []
    for p in paths:
        relative = p.absolute().relative_to(base).with_suffix("")
        first = p.stem if stems[p.stem.lower()] == 1 else "__".join(relative.parts)
        candidates = (first, f"{first}_{p.suffix.lstrip('.')}", *(f"{first}_{k}" for k in range(2, len(paths) + 2)))
        name = next(c for c in candidates if not _files(c) & taken)
        taken |= _files(name)
        names.append(name)
    return names


def _files(name: str) -> set[str]:
    return {f"{name}{s}.png".lower() for s in OUTPUT_SUFFIXES}


def read_image(path: Path) -> Image.Image:
    """Decode a JPEG or PNG fully into an RGB image.

    Raises:
        UserError: empty, unreadable, truncated, not JPEG / PNG, or in an unsupported mode.
    """
    if not Path(path).is_file():  # a FIFO or device: Image.open would block or read forever
        raise UserError(f"{path}: not a regular file (a folder, device, FIFO or socket)")
    try:
        with Image.open(path) as image:
            if image.format not in FORMATS:
                raise UserError(f"{path}: a {image.format or 'unknown'} image; only JPEG and PNG are read")
            if image.width * image.height > MAX_PIXELS:  # refused before decoding: 12000x12000 RGB is 432 MB
                raise UserError(f"{path}: {image.width}x{image.height} pixels, more than the {MAX_PIXELS // 10**6} "
                                "megapixels read; downscale it first")
            if image.mode not in MODES:
                raise UserError(f"{path}: unsupported image mode {image.mode} (8-bit greyscale, palette, RGB, "
                                "RGBA or CMYK are read)")
            image.load()  # decode now: a truncated file fails here
            # a camera's EXIF orientation: the picture as people see it (predict has no fixations to keep aligned)
            return ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        reason = "not an image" if isinstance(err, UnidentifiedImageError) else str(err).splitlines()[0] or type(
            err).__name__
        raise UserError(f"{path}: unreadable or corrupt image ({reason})") from None
