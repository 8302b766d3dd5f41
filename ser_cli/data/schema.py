"""The HDF5 store, schema version 1: names, layout and the checks every reader runs on open.

A *data file* (`kind = "ser-dataset"`) holds one group per split (`train`, `test`), each with:

    images           uint8 (N, H, W, 3)   one chunk per image              (storage = "raw")
    images_encoded   vlen uint8 (N,)      PNG bytes per image              (storage = "encoded")
    labels           int64 (N,)
    maps             uint8 (N, H, W)      optional ground-truth saliency, 255 = the image's maximum
    masks            uint8 (N, H, W)      optional object region (1 = the class object, 0 = elsewhere; SynthSal)
    fixations        int32 (M, 4)         optional fixation points: (row, observer, y, x), 0-based pixels
    fixation_ptr     int64 (N + 1,)       fixations of row i are fixations[fixation_ptr[i]:fixation_ptr[i+1]]
    done             bool (N,)            rows written so far (resumable writers)

File attributes: `schema_version`, `kind`, `height`, `width`, `storage`, `class_names` (JSON list), `provenance`
(JSON: generator parameters or source path, package version, creation time), `fingerprint` (sha256 of labels
and pixels, set when complete: maps, masks and fixations are not part of it), `complete`. A *maps file*
(`kind = "ser-maps"`, written by `ser precompute`) has the same groups with only `maps`, plus `data_fingerprint`,
`method` and `model_sha256` (see `ser_cli.data.maps`).
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import h5py
import numpy as np

from ser_cli.runtime.errors import UserError

SCHEMA_VERSION = 1
DATASET_KIND = "ser-dataset"
MAPS_KIND = "ser-maps"
SPLITS = ("train", "test")


def open_checked(path: Path, kind: str) -> h5py.File:
    """Open `path` read-only after checking it is a complete `ser` file of `kind` with a readable schema."""
    path = Path(path)
    if path.exists() and not path.is_file():  # a folder, or a FIFO whose open would block forever
        raise UserError(f"{path}: not a regular file (a folder, device, FIFO or socket); expected a {kind} file")
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    if not h5py.is_hdf5(path):
        raise UserError(f"{path}: not an HDF5 file (expected a {kind} file written by `ser`)")
    try:
        h5 = h5py.File(path, "r", locking=False)
    except OSError as err:  # a truncated or corrupt file: HDF5 cannot read its superblock or root group
        raise UserError(f"{path}: unreadable HDF5 file ({_first_line(err)}); is it truncated? rewrite or "
                        "re-download it") from None
    try:
        _check_attrs(h5, path, kind)
        check_layout(h5, path, kind)
    except UserError:
        h5.close()
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as err:  # damaged metadata deeper in the file
        h5.close()
        raise UserError(f"{path}: damaged HDF5 metadata ({_first_line(err)}); rewrite or re-download it") from None
    return h5


def file_kind(path: Path) -> str | None:
    """The `kind` attribute of an HDF5 file (`ser-dataset`, `ser-maps`), or None: not HDF5, unreadable, or no kind."""
    if not Path(path).is_file():  # never open a FIFO or device: the read would block or consume it
        return None
    try:
        with h5py.File(path, "r", locking=False) as h5:
            kind = h5.attrs.get("kind")
    except (OSError, ValueError):
        return None
    return kind.decode() if isinstance(kind, bytes) else None if kind is None else str(kind)


def _first_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def read_attr(path: Path, attrs: h5py.AttributeManager, name: str, parse: type | None = None, default=None):
    """Attribute `name` parsed by `parse` (e.g. int, json.loads); one-line UserError naming it when missing or bad."""
    if name not in attrs:
        if default is not None:
            return default
        raise UserError(f"{path}: missing attribute '{name}'; not a complete file written by `ser`")
    value = attrs[name]
    try:
        return parse(value) if parse else value
    except (TypeError, ValueError) as err:
        raise UserError(f"{path}: attribute '{name}' is unreadable ({_first_line(err)})") from None


def _check_attrs(h5: h5py.File, path: Path, kind: str) -> None:
    version = h5.attrs.get("schema_version")
    if version is None:
        raise UserError(f"{path}: no schema_version attribute; not a file written by `ser`")
    if int(version) < 1:
        raise UserError(f"{path}: schema version {int(version)} is not one ser ever wrote (1..{SCHEMA_VERSION})")
    if int(version) > SCHEMA_VERSION:
        raise UserError(f"{path}: schema version {int(version)} is newer than this ser supports ({SCHEMA_VERSION}); "
                        "upgrade ser")
    if h5.attrs.get("kind") != kind:
        raise UserError(f"{path}: is a {h5.attrs.get('kind')!r} file, expected {kind!r}")
    if not h5.attrs.get("complete", False):
        raise UserError(f"{path}: incomplete file (the writer did not finish); rerun the command that makes it")
    for split in SPLITS:
        if split not in h5:
            raise UserError(f"{path}: missing required group '/{split}'")
        required = ("maps",) if kind == MAPS_KIND else ("labels",)
        for name in required:
            if name not in h5[split]:
                raise UserError(f"{path}: missing required dataset '/{split}/{name}'")
        if kind == DATASET_KIND and "images" not in h5[split] and "images_encoded" not in h5[split]:
            raise UserError(f"{path}: missing required dataset '/{split}/images'")


MAX_SIDE = 1 << 16  # no image or map side of a real file comes near it; a larger one is damage, not data


def check_layout(h5: h5py.File, path: Path, kind: str) -> None:
    """The file's datasets against the schema: dtypes, shapes, the sizes in the attributes, label ranges and names.

    Raises:
        UserError: the first dataset or attribute that is not what `ser` writes, named.
    """
    height, width = (_side(h5, path, name) for name in ("height", "width"))
    if kind == MAPS_KIND:
        for split in SPLITS:
            _expect(path, h5[split], split, "maps", np.dtype(np.uint8), (None, height, width))
        return
    names = class_names(h5, path)
    labels = {split: _check_split(h5[split], path, split, height, width, len(names)) for split in SPLITS}
    lost = sorted(set(labels["train"].tolist()) - set(labels["test"].tolist()))
    if lost:
        raise UserError(f"{path}: /test/labels has no image of class {names[lost[0]]!r} (label {lost[0]}), which "
                        "/train/labels has; the test split lost a class")


def class_names(h5: h5py.File, path: Path) -> list[str]:
    """The `class_names` attribute: a JSON list of distinct, printable, non-empty strings."""
    try:
        names = json.loads(h5.attrs["class_names"]) if "class_names" in h5.attrs else None
    except (TypeError, ValueError):
        names = None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise UserError(f"{path}: attribute 'class_names' must be a JSON list of class names")
    if any(unicodedata.category(c) == "Cc" for n in names for c in n):  # terminal escapes, NUL, newlines
        raise UserError(f"{path}: attribute 'class_names' holds control characters; not a file written by `ser`")
    if len(set(names)) != len(names):
        raise UserError(f"{path}: attribute 'class_names' names a class twice")
    return names


def _side(h5: h5py.File, path: Path, name: str) -> int:
    value = h5.attrs.get(name)
    if not isinstance(value, (int, np.integer)) or not 1 <= int(value) <= MAX_SIDE:
        shown = value.item() if isinstance(value, np.generic) else value
        raise UserError(f"{path}: attribute '{name}' must be an integer in 1..{MAX_SIDE} (got {shown!r})")
    return int(value)


def _check_split(group: h5py.Group, path: Path, split: str, height: int, width: int, n_classes: int) -> np.ndarray:
    """Check one split of a data file; returns its labels."""
    labels = _expect(path, group, split, "labels", "integer", (None,))
    n = labels.shape[0]
    if "images" in group:
        _expect(path, group, split, "images", np.dtype(np.uint8), (n, height, width, 3))
    else:
        encoded = _expect(path, group, split, "images_encoded", "vlen uint8", (n,))
        if h5py.check_vlen_dtype(encoded.dtype) != np.uint8:
            raise UserError(f"{path}: /{split}/images_encoded is {encoded.dtype}, expected vlen uint8")
    for name in ("maps", "masks"):
        if name in group:
            _expect(path, group, split, name, np.dtype(np.uint8), (n, height, width))
    if "done" in group:
        _expect(path, group, split, "done", np.dtype(bool), (n,))
    if ("fixations" in group) != ("fixation_ptr" in group):
        raise UserError(f"{path}: /{split} has only one of 'fixations' and 'fixation_ptr'")
    if "fixations" in group:
        _expect(path, group, split, "fixations", "integer", (None, 4))
        _expect(path, group, split, "fixation_ptr", "integer", (n + 1,))
    values = labels[:]
    bad = values[(values < 0) | (values >= n_classes)]
    if len(bad):
        raise UserError(f"{path}: /{split}/labels holds {int(bad[0])}, outside the {n_classes} classes "
                        f"0..{n_classes - 1} that 'class_names' names")
    return values


def _expect(path: Path, group: h5py.Group, split: str, name: str, dtype: np.dtype | str,
            shape: tuple[int | None, ...]) -> h5py.Dataset:
    """`group[name]`, checked to be a dataset of `dtype` ("integer": any integer type) and `shape` (None: any)."""
    ds = group.get(name)
    if not isinstance(ds, h5py.Dataset):
        raise UserError(f"{path}: missing required dataset '/{split}/{name}'")
    if dtype == "integer" and ds.dtype.kind not in "iu" or isinstance(dtype, np.dtype) and ds.dtype != dtype:
        raise UserError(f"{path}: /{split}/{name} is {ds.dtype}, expected {dtype}")
    if len(ds.shape) != len(shape) or any(w is not None and g != w for g, w in zip(ds.shape, shape, strict=True)):
        want = "(" + ", ".join("N" if w is None else str(w) for w in shape) + ("," if len(shape) == 1 else "") + ")"
        raise UserError(f"{path}: /{split}/{name} has shape {ds.shape}, expected {want}")
    return ds
