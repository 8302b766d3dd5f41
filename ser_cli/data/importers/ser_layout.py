"""`ser-layout`: the SER authors' ImageNet layout (Bellitto et al., NeurIPS 2024; method.md section 2).

Images at `ROOT/images/{train,val}/<wnid>/<name>.JPEG`; optional saliency maps at
`ROOT/annotations/{train,val}/<wnid>/<name>.png` (8-bit grey, any size), the image path with `images` ->
`annotations` and the suffix -> `.png`, as the authors' loader derives it. `val` is the test split. The class
order (`--class-order fg-imagenet|mini-imagenet|FILE`, wnid -> label) fixes the labels and therefore the tasks
(task = label // classes_per_task); without one, labels follow the sorted wnids. When `annotations/` exists every
image must have its map and every map its image.
"""

from __future__ import annotations

from pathlib import Path

from ser_cli.data.importers.base import Importer, ImportOptions, ImportPlan, register_importer
from ser_cli.data.importers.folders import class_items, require_dir, resolve_classes, subfolders
from ser_cli.runtime.errors import UserError

LAYOUT = "ROOT/images/{train,val}/<wnid>/<name>.JPEG (optional ROOT/annotations/{train,val}/<wnid>/<name>.png)"
SPLIT_FOLDERS = {"train": "train", "test": "val"}


@register_importer("ser-layout")
class SerLayoutImporter(Importer):
    """ImageNet-style class folders with optional precomputed saliency maps."""

    def scan(self, src: Path, options: ImportOptions) -> ImportPlan:
        """See the module docstring."""
        if options.test_fraction is not None:
            raise UserError("--test-fraction: ser-layout takes its test split from ROOT/images/val")
        dirs = {s: require_dir(src / "images" / f, LAYOUT) for s, f in SPLIT_FOLDERS.items()}
        names, order_source = resolve_classes(dirs["train"], dirs["test"], options.class_order)
        annotations = src / "annotations"
        with_maps = annotations.is_dir()
        splits = {
            split: class_items(dirs[split], names, options.limit_per_class,
                               annotations / folder if with_maps else None)
            for split, folder in SPLIT_FOLDERS.items()
        }
        skipped = sorted(set(subfolders(dirs["train"])) - set(names))
        details = {"class_order": order_source, "maps": "annotations" if with_maps else "none",
                   "skipped_classes": len(skipped), "limit_per_class": options.limit_per_class}
        return ImportPlan(names, splits, details=details)
