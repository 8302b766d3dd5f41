"""Stage `synth`: write a SynthSal data file (`ser data synth --out data/synth.h5`).

Images, labels, ground-truth maps, fixation points and object masks (the class object's pixels, taken from the
geometry the generator already drew: no extra random numbers, so images, maps, fixations and the fingerprint are
the same as without them) for the train and test splits, into the HDF5 store through the atomic writer.
Provenance records the generator parameters; no wall-clock time is recorded unless SOURCE_DATE_EPOCH is set, so
that the same parameters and seed give a byte-identical file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ser_cli.config import SynthConfig
from ser_cli.data.schema import SPLITS
from ser_cli.data.synth import SynthSal, split_labels
from ser_cli.data.writer import StoreWriter
from ser_cli.runtime.output_lock import locks_outputs
from ser_cli.runtime.progress import progress_bar

BLOCK = 64


@locks_outputs("out", torchrun=False)
def run(cfg: SynthConfig, out: Path, overwrite: bool = False) -> Path:
    """Generate the file at `out`; returns its path (`overwrite`: replace a ser data file of other settings)."""
    gen = SynthSal(cfg)
    provenance = {"generator": "synthsal", "params": cfg.model_dump(mode="json")}
    if "SOURCE_DATE_EPOCH" in os.environ:
        provenance["created_at_epoch"] = int(os.environ["SOURCE_DATE_EPOCH"])
    writer = StoreWriter(out, height=cfg.height, width=cfg.width, class_names=[c.name for c in gen.classes],
                         provenance=provenance, overwrite=overwrite)
    try:
        with progress_bar() as bar:
            for split in SPLITS:
                _write_split(writer, gen, split, bar)
        return writer.finalize()
    finally:
        writer.close()


def _write_split(writer: StoreWriter, gen: SynthSal, split: str, bar) -> None:
    labels = split_labels(gen.cfg, split)
    writer.create_split(split, len(labels), with_maps=True, with_fixations=True, with_masks=True)
    task = bar.add_task(f"synth {split}", total=len(labels), info="")
    all_points, counts = [], []
    for start in range(0, len(labels), BLOCK):
        rows = np.arange(start, min(start + BLOCK, len(labels)))
        samples = [gen.draw(split, int(r), int(labels[r])) for r in rows]
        images, maps = np.stack([s.image for s in samples]), np.stack([s.saliency for s in samples])
        masks = np.stack([s.target.mask for s in samples]).astype(np.uint8)  # (n, H, W), 1 = the class object
        writer.write_rows(split, rows, images, labels[rows], maps, masks)
        for r, s in zip(rows, samples, strict=True):
            all_points.append(np.column_stack([np.full(len(s.fixations), r, np.int32), s.fixations]))
            counts.append(len(s.fixations))
        bar.advance(task, len(rows))
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    writer.write_fixations(split, np.concatenate(all_points), ptr)
