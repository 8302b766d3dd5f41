"""PyTorch `Dataset` over one split of a data file, with saliency maps from the file itself or a maps file.

Each item is `(image uint8 (3, H, W), saliency map float32 (H, W) summing to 1, label int64, row int64)`, plus a
fixation mask bool (H, W) when asked for. Files are opened lazily, once per DataLoader worker process, because
h5py handles cannot be pickled and must not be shared across a fork.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from ser_cli.data.store import fixations_of, read_image


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
        self._data: h5py.File | None = None
        self._maps: h5py.File | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_data"] = state["_maps"] = None  # each worker opens its own handles
        return state

    def _open(self) -> None:
        self._data = h5py.File(self.data_path, "r", locking=False)
        if self.maps_path is not None:
            self._maps = h5py.File(self.maps_path, "r", locking=False)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        if self._data is None:
            self._open()
        row = int(self.rows[i])
        group = self._data[self.split]
        image = torch.from_numpy(np.ascontiguousarray(read_image(group, row))).permute(2, 0, 1)  # (3, H, W)
        item = (image, self._target(row), torch.tensor(int(group["labels"][row])), torch.tensor(row))
        if self.with_fixations:
            item += (self._fixation_mask(group, row),)
        return item

    def _target(self, row: int) -> torch.Tensor:
        if self._maps is not None:
            raw = self._maps[self.split]["maps"][row]
        elif self.has_own_maps:
            raw = self._data[self.split]["maps"][row]
        else:
            raw = np.ones((self.height, self.width), np.uint8)
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

    def close(self) -> None:
        for h5 in (self._data, self._maps):
            if h5 is not None:
                h5.close()
        self._data = self._maps = None
