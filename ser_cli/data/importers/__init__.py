"""Importers of published datasets into the HDF5 store (`ser data import FORMAT SRC --out FILE.h5`).

Formats, one file each, registered by name: `salicon` and `mit1003` (fixation datasets: images, continuous maps,
fixation points; saliency-datasets-and-metrics.md section 3), `ser-layout` (the SER authors' ImageNet layout with
optional maps; method.md section 2) and `imagefolder` (any class-per-folder dataset). Images and maps are resized
with LANCZOS to `data.height` x `data.width`, aspect ignored, as the SER paper does.
"""

from ser_cli.data.importers import imagefolder, mit1003, salicon, ser_layout
from ser_cli.data.importers.base import (
    IMPORTERS,
    Importer,
    ImportOptions,
    ImportPlan,
    Item,
    build_importer,
    importer_names,
    register_importer,
)
from ser_cli.data.importers.class_order import ClassOrder, builtin_class_orders, load_class_order
from ser_cli.data.importers.decode import Decoded, decode_item

__all__ = [
    "IMPORTERS",
    "ClassOrder",
    "Decoded",
    "ImportOptions",
    "ImportPlan",
    "Importer",
    "Item",
    "build_importer",
    "builtin_class_orders",
    "decode_item",
    "imagefolder",
    "importer_names",
    "load_class_order",
    "mit1003",
    "register_importer",
    "salicon",
    "ser_layout",
]
