"""Content fingerprint of a data file: sha256 over its classes, labels and pixels, split by split.

It identifies the *content* (not the file's bytes or name), so a maps file or a run can check that it belongs
to the data file it is used with. It is computed once by the writer and stored as the `fingerprint` attribute.
"""

from __future__ import annotations

import hashlib
import json

import h5py

from ser_cli.data.schema import SPLITS

BLOCK_ROWS = 256


def data_fingerprint(h5: h5py.File) -> str:
    """sha256 hex digest of class names, then per split its labels and its images, read in blocks."""
    digest = hashlib.sha256()
    digest.update(str(h5.attrs["class_names"]).encode())
    for split in SPLITS:
        if split not in h5:
            continue
        group = h5[split]
        digest.update(split.encode())
        _digest_split(digest, group)
    return digest.hexdigest()


def split_fingerprint(h5: h5py.File, split: str) -> str:
    """sha256 of the class names (JSON), one split's labels and its images: a clean file and its spurious copy share
    the test split's (the protocol leaves test images untouched), so `ser compare` can pair them."""
    digest = hashlib.sha256(json.dumps(json.loads(h5.attrs["class_names"])).encode())
    _digest_split(digest, h5[split])
    return digest.hexdigest()


def _digest_split(digest: hashlib._Hash, group: h5py.Group) -> None:
    digest.update(group["labels"][:].tobytes())
    images = group["images"] if "images" in group else group["images_encoded"]
    for start in range(0, images.shape[0], BLOCK_ROWS):
        block = images[start:start + BLOCK_ROWS]
        if images.dtype.kind == "O":  # encoded: one variable-length byte array per row
            for item in block:
                digest.update(item.tobytes())
        else:
            digest.update(block.tobytes())
