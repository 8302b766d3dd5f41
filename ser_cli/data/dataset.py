"""PyTorch `Dataset` over one split of a data file, with saliency maps from the file itself or a maps file.

Each item is `(image uint8 (3, H, W), saliency map float32 (H, W) summing to 1, label int64, row int64)`, plus a
fixation mask bool (H, W) when asked for. A DataLoader fetches a whole batch through `__getitems__`, which reads its
rows straight into stacked tensors (allocated in shared memory inside a worker, so sending them back copies
nothing); give the loader `collate_fn=collate`. Files are opened lazily, once per DataLoader worker process,
because h5py handles cannot be pickled and must not be shared across a fork.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset, default_collate, get_worker_info

from ser_cli.data.store import file_order, fixations_of, read_image, read_images


@dataclass
class _Handles:
    """One process's open files and what every item needs from them."""

    files: tuple[h5py.File, ...]
    group: h5py.Group  # the split in the data file
    maps: h5py.Dataset | None  # (N, H, W) uint8 targets from the maps file or the data file; None: uniform
    labels: np.ndarray  # (N,) int64, read once: a one-value h5py read costs about as much as an image row


class SplitDataset(Dataset):
    """Rows `rows` (default: all) of split `split` of the data file `data_path`.

    Args:
        maps_path: a maps file (`ser precompute`) to read targets from; `None` uses the data file's own `maps`
            when present, and a uniform map otherwise.
        with_fixations: also return the image's fixation points rasterised as a bool mask.
    """

    def __init__(self, data_path: Path | str, split: str, rows: np.ndarray | None = None,
                 maps_path: Path | str | None = None, with_fixations: bool = False) -> None:
        self.data_path, self.maps_path = Path(data_path), Path(maps_path) if maps_path else None
        self.split, self.with_fixations = split, with_fixations
        with h5py.File(self.data_path, "r", locking=False) as h5:
            self.size = int(h5[split]["labels"].shape[0])
            self.has_own_maps = "maps" in h5[split]
            self.height, self.width = int(h5.attrs["height"]), int(h5.attrs["width"])
        self.rows = np.arange(self.size) if rows is None else np.asarray(rows, dtype=np.int64)
        self._h5: _Handles | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_h5"] = None  # each worker opens its own handles
        return state

    def _handles(self) -> _Handles:
        if self._h5 is None:
            data = h5py.File(self.data_path, "r", locking=False)
            group = data[self.split]
            if self.maps_path is not None:
                maps_file = h5py.File(self.maps_path, "r", locking=False)
                files, maps = (data, maps_file), maps_file[self.split]["maps"]
            else:
                files, maps = (data,), group["maps"] if self.has_own_maps else None
            self._h5 = _Handles(files, group, maps, group["labels"][:].astype(np.int64))
        return self._h5

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        h5 = self._handles()
        row = int(self.rows[i])
        image = torch.from_numpy(np.ascontiguousarray(read_image(h5.group, row))).permute(2, 0, 1)  # (3, H, W)
        item = (image, self._target(h5, row), torch.tensor(int(h5.labels[row])), torch.tensor(row))
        if self.with_fixations:
            item += (self._fixation_mask(h5.group, row),)
        return item

    def _target(self, h5: _Handles, row: int) -> torch.Tensor:
        raw = h5.maps[row] if h5.maps is not None else np.ones((self.height, self.width), np.uint8)
        # numpy, not torch: per-item torch ops start intra-op threads that fight the training process for cores.
        m = raw.astype(np.float32)  # (H, W)
        total = m.sum()
        m = m / total if total > 0 else np.full_like(m, 1.0 / m.size)
        return torch.from_numpy(m)

    def _fixation_mask(self, group: h5py.Group, row: int) -> torch.Tensor:
        mask = torch.zeros(self.height, self.width, dtype=torch.bool)
        points = fixations_of(group, row)
        mask[torch.from_numpy(points[:, 2].astype(np.int64)), torch.from_numpy(points[:, 3].astype(np.int64))] = True
        return mask

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        """Items `indices` (any order, repeats allowed) as one batch: what `default_collate` makes of
        `[self[i] for i in indices]`, without the per-item tensors and the copy that stacks them."""
        h5 = self._handles()
        rows = self.rows[np.asarray(indices, dtype=np.int64)]  # (B,)
        images = _empty((len(rows), 3, self.height, self.width), torch.uint8)
        read_images(h5.group, rows, images.numpy())
        batch = (images, self._targets(h5, rows), torch.from_numpy(h5.labels[rows]), torch.from_numpy(rows))
        if self.with_fixations:
            batch += (self._fixation_masks(h5.group, rows),)
        return batch

    def _targets(self, h5: _Handles, rows: np.ndarray) -> torch.Tensor:
        out = _empty((len(rows), self.height, self.width), torch.float32)
        m = out.numpy()  # (B, H, W)
        if h5.maps is None:
            m[...] = 1
        else:
            for j in file_order(rows):
                m[j] = h5.maps[int(rows[j])]
        # Summed per row over H * W values, as `_target` sums one map, so the float32 rounding is the same.
        total = m.reshape(len(rows), -1).sum(axis=1)  # (B,)
        blank = total == 0
        np.divide(m, np.where(blank, 1, total)[:, None, None], out=m)
        m[blank] = 1.0 / (self.height * self.width)
        return out

    def _fixation_masks(self, group: h5py.Group, rows: np.ndarray) -> torch.Tensor:
        out = _empty((len(rows), self.height, self.width), torch.bool)
        masks = out.numpy()  # (B, H, W)
        masks[...] = False
        for j, row in enumerate(rows.tolist()):
            points = fixations_of(group, row)
            masks[j, points[:, 2], points[:, 3]] = True
        return out

    def close(self) -> None:
        for h5 in self._h5.files if self._h5 is not None else ():
            h5.close()
        self._h5 = None


def collate(batch: tuple[torch.Tensor, ...] | list) -> list:
    """DataLoader `collate_fn`: a batch `SplitDataset.__getitems__` stacked passes through, as the list
    `default_collate` returns; a list of items (a dataset without `__getitems__`) goes to `default_collate`."""
    return list(batch) if isinstance(batch, tuple) else default_collate(batch)


def _empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor; inside a DataLoader worker, in shared memory, as `default_collate` allocates its
    batches there: otherwise pickling it back to the main process copies it into shared memory first."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * dtype.itemsize)
    return torch.empty(0, dtype=dtype).set_(storage).view(shape)
