"""Stage `spurious`: copy a data file with the paper's spurious feature added (`ser data spurious IN.h5 --out OUT.h5`).

The spurious-feature protocol of SER (Bellitto et al., NeurIPS 2024, section 5.3; method.md section 5): every
*training* image of class c is brightened by 5(c+1) on the 0..255 scale (clipped; `ser_cli.data.synth.brighten`,
the same function `ser data synth --set data.synth.spurious=true` uses), so brightness predicts the class in
training but not at test time. The test split, maps, fixation points and object masks are copied unchanged.
Provenance records the transform and the source's fingerprint and provenance; the output is written through the
atomic store writer.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from rich.progress import Progress

from ser_cli.data.schema import SPLITS
from ser_cli.data.store import DataFile, read_image
from ser_cli.data.synth import brighten
from ser_cli.data.writer import StoreWriter
from ser_cli.runtime.errors import UserError
from ser_cli.runtime.output_folder import check_disjoint
from ser_cli.runtime.output_lock import locks_outputs
from ser_cli.runtime.progress import progress_bar

BLOCK = 64
TRANSFORM = "train images of class c brightened by 5(c+1)/255 (clipped); test split unchanged"


@locks_outputs("out", torchrun=False)
def run(src: Path, out: Path, overwrite: bool = False) -> Path:
    """Write the spurious copy of `src` to `out`; returns its path (`overwrite`: replace a ser data file of other
    provenance)."""
    check_disjoint({"--out": Path(out)}, {"IN": Path(src)})
    data = DataFile(src)
    _check(data, Path(out))
    provenance = {"generator": "spurious", "spurious": True, "transform": TRANSFORM, "source": str(data.path),
                  "source_fingerprint": data.fingerprint, "source_provenance": data.provenance}
    writer = StoreWriter(Path(out), height=data.height, width=data.width, class_names=data.class_names,
                         provenance=provenance, storage=data.storage, overwrite=overwrite)
    try:
        with h5py.File(data.path, "r", locking=False) as h5, progress_bar() as bar:
            for split in SPLITS:
                _copy_split(h5[split], writer, split, bar)
        return writer.finalize()
    finally:
        writer.close()


def _check(data: DataFile, out: Path) -> None:
    if out.is_dir():
        raise UserError(f"--out {out}: is a directory; give a file name, e.g. {out / 'spurious.h5'}")
    if data.spurious:
        raise UserError(f"{data.path}: already has the spurious feature (provenance); brightening it again would "
                        "add 10(c+1)")


def _copy_split(group: h5py.Group, writer: StoreWriter, split: str, bar: Progress) -> None:
    n = int(group["labels"].shape[0])
    with_maps, with_fixations, with_masks = "maps" in group, "fixation_ptr" in group, "masks" in group
    writer.create_split(split, n, with_maps=with_maps, with_fixations=with_fixations, with_masks=with_masks)
    task = bar.add_task(f"spurious {split}", total=n, info="brightened" if split == "train" else "copied")
    for start in range(0, n, BLOCK):
        rows = np.arange(start, min(start + BLOCK, n))
        labels = group["labels"][start:rows[-1] + 1]
        images = np.stack([read_image(group, int(r)) for r in rows])  # (n, H, W, 3) uint8
        if split == "train":
            images = np.stack([brighten(im, int(y)) for im, y in zip(images, labels, strict=True)])
        maps = group["maps"][start:rows[-1] + 1] if with_maps else None
        masks = group["masks"][start:rows[-1] + 1] if with_masks else None
        writer.write_rows(split, rows, images, labels, maps, masks)
        bar.advance(task, len(rows))
    if with_fixations:
        writer.write_fixations(split, group["fixations"][:], group["fixation_ptr"][:])
