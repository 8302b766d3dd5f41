"""Content checksums of data and maps files: a sha256 per dataset, written once when the file is finished.

Every dataset of the split groups (`/train/images`, `/test/labels`, `/train/maps`, ...) carries a `sha256` attribute:
the digest of its dtype, shape and content (read in blocks of rows; a variable-length dataset row by row, each row
prefixed by its length). The writers (`StoreWriter.finalize`, `assemble_maps_file`) set them; the readers
(`DataFile`, `MapsFile`) recompute and compare them before any work, so a byte changed after `ser` wrote the file
(a bad copy, a disk error, a hand edit) is refused with one line naming the dataset. A file is verified once per
process (keyed by its inode, size and modification time). Files written before checksums existed carry none and stay
readable, unverified.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import h5py
import numpy as np

from ser_cli.data.schema import SPLITS
from ser_cli.runtime.errors import UserError

ATTR = "sha256"
BLOCK_BYTES = 8 << 20  # rows are read in blocks of about this size: few HDF5 calls, bounded memory
_VERIFIED: set[tuple[str, int, int, int, int]] = set()  # files already verified in this process


def dataset_sha256(ds: h5py.Dataset) -> str:
    """sha256 hex digest of a dataset's dtype, shape and content."""
    digest = hashlib.sha256(f"{ds.dtype.str}{ds.shape}".encode())
    if ds.shape == () or ds.shape[0] == 0:
        digest.update(np.asarray(ds[()]).tobytes())
        return digest.hexdigest()
    vlen = h5py.check_vlen_dtype(ds.dtype) is not None
    row_bytes = max(1, int(np.prod(ds.shape[1:], dtype=np.int64)) * ds.dtype.itemsize)
    rows = 1024 if vlen else max(1, BLOCK_BYTES // row_bytes)
    for start in range(0, ds.shape[0], rows):
        block = ds[start:start + rows]
        if vlen:  # length-prefixed, so moving a byte from one row to the next changes the digest
            for item in block:
                digest.update(len(item).to_bytes(8, "little"))
                digest.update(np.ascontiguousarray(item).tobytes())
        else:
            digest.update(np.ascontiguousarray(block).tobytes())
    return digest.hexdigest()


def _datasets(h5: h5py.File) -> list[tuple[str, h5py.Dataset]]:
    """(`/split/name`, dataset) of every dataset of the split groups, in a fixed order."""
    found = []
    for split in SPLITS:
        if split in h5 and isinstance(h5[split], h5py.Group):
            items = sorted(h5[split].items())
            found += [(f"/{split}/{name}", ds) for name, ds in items if isinstance(ds, h5py.Dataset)]
    return found


def write_checksums(h5: h5py.File) -> None:
    """Set the `sha256` attribute of every dataset of the split groups (the file is finished: nothing changes after)."""
    for _, ds in _datasets(h5):
        ds.attrs[ATTR] = dataset_sha256(ds)


def stored_checksums(h5: h5py.File) -> dict[str, str] | None:
    """`/split/name` -> stored sha256, or None for a file written before checksums existed (none stored)."""
    stored = {name: ds.attrs.get(ATTR) for name, ds in _datasets(h5)}
    if all(v is None for v in stored.values()):
        return None
    return {k: v.decode() if isinstance(v, bytes) else None if v is None else str(v) for k, v in stored.items()}


def verify_checksums(h5: h5py.File, path: Path) -> bool:
    """Recompute every dataset's sha256 and compare; True when verified, False when the file carries no checksums.

    Raises:
        UserError: a dataset whose content, dtype or shape is not what `ser` wrote, or one added without a checksum.
    """
    key = _file_key(path)
    if key in _VERIFIED:
        return True
    stored = stored_checksums(h5)
    if stored is None:
        return False
    for name, ds in _datasets(h5):
        if stored[name] is None:
            raise UserError(f"{path}: {name} has no checksum (added after ser wrote the file); rewrite the file")
        if dataset_sha256(ds) != stored[name]:
            raise UserError(f"{path}: {name} does not match its checksum (modified or damaged after ser wrote it); "
                            "rewrite or re-download the file")
    _VERIFIED.add(key)
    return True


def checksum_state(h5: h5py.File, path: Path, verify: bool) -> str:
    """`verified` (checked now or earlier in this process), `absent` (a file from before checksums) or `unchecked`."""
    if not verify:
        return "unchecked" if stored_checksums(h5) is not None else "absent"
    return "verified" if verify_checksums(h5, path) else "absent"


def _file_key(path: Path) -> tuple[str, int, int, int, int]:
    st = os.stat(path)
    return (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
