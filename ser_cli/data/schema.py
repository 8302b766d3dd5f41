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

from pathlib import Path

import h5py

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
    except UserError:
        h5.close()
        raise
    except (OSError, KeyError, ValueError, TypeError) as err:  # damaged metadata deeper in the file
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
