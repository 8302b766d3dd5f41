"""`imagefolder`: the torchvision ImageFolder layout, `ROOT/{train,test|val}/<class>/<image>`.

Any class-per-folder dataset: labels follow a class order (`--class-order`: a built-in name, a YAML mapping
name -> label, or a list) or, without one, the sorted names of the train folders, as torchvision's
`ImageFolder` assigns them. The test split is `ROOT/test`, or `ROOT/val` when there is no `test` (having both is
ambiguous and refused). With a class order, folders it does not name are left out.
"""

from __future__ import annotations

from pathlib import Path

from ser_cli.data.importers.base import Importer, ImportOptions, ImportPlan, register_importer
from ser_cli.data.importers.folders import class_items, require_dir, resolve_classes, subfolders
from ser_cli.runtime.errors import UserError

LAYOUT = "ROOT/{train,test|val}/<class>/<image>"


@register_importer("imagefolder")
class ImageFolderImporter(Importer):
    """Class-per-folder images without maps."""

    def scan(self, src: Path, options: ImportOptions) -> ImportPlan:
        """See the module docstring."""
        if options.test_fraction is not None:
            raise UserError("--test-fraction: imagefolder takes its test split from ROOT/test or ROOT/val")
        train_dir = require_dir(src / "train", LAYOUT)
        test_dir = _test_dir(src)
        names, order_source = resolve_classes(train_dir, test_dir, options.class_order)
        limit = options.limit_per_class
        splits = {"train": class_items(train_dir, names, limit), "test": class_items(test_dir, names, limit)}
        skipped = sorted(set(subfolders(train_dir)) - set(names))
        details = {"class_order": order_source, "test_folder": test_dir.name, "skipped_classes": len(skipped),
                   "limit_per_class": limit}
        return ImportPlan(names, splits, details=details)


def _test_dir(src: Path) -> Path:
    test, val = src / "test", src / "val"
    if test.is_dir() and val.is_dir():
        raise UserError(f"{src}: has both test/ and val/; keep the one that is the test split")
    return test if test.is_dir() else require_dir(val, LAYOUT)
