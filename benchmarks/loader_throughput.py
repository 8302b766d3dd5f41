"""Loader throughput: training batches per second from the HDF5 store (raw, encoded) and from a JPEG folder.

A training batch is what `ser train` reads: image, saliency map and label, batch 8 at the paper's 288x384, drawn
by a shuffled DataLoader (random access). Three sources hold the same 200 images:

(a) the HDF5 store with raw uint8 pixels (`storage = "raw"`, the default): no decoding, no resizing, a batch read
    in one `SplitDataset.__getitems__` call (also timed item by item, the DataLoader's default fetch, as (a1));
(b) the HDF5 store with PNG-encoded pixels (`storage = "encoded"`): decoded per image, already at size;
(c) the authors' layout, `images/train/<wnid>/<name>.JPEG` of about 500x375 plus `annotations/.../<name>.png`,
    decoded and LANCZOS-resized to 288x384 per item, as SER's `datasets/seq_imagenet100.py` does.

The issue's target is (a) at least 5x (c). Each case runs with 0 and 2 DataLoader workers; run it with
`python -m benchmarks loader`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import Row, blob_map, rate, register_benchmark, smooth_image
from ser_cli.data.dataset import SplitDataset, collate
from ser_cli.data.writer import StoreWriter

N_IMAGES, N_CLASSES = 200, 4
SOURCE_SIZE = (375, 500)  # (H, W) of the JPEGs, a typical ImageNet photograph
SIZE = (288, 384)  # (H, W) the paper trains at
BATCH, WORKERS = 8, (0, 2)
MIN_SECONDS = 1.5


class ItemByItem(SplitDataset):
    """`SplitDataset` without its batch read: the DataLoader fetches `dataset[i]` per item and collates them."""

    __getitems__ = None


class JpegFolder(Dataset):
    """The authors' loader: decode a JPEG and its PNG map, LANCZOS-resize both, per item."""

    def __init__(self, images: list[Path], labels: list[int], size: tuple[int, int]) -> None:
        self.images, self.labels, self.size = images, labels, size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        height, width = self.size
        path = self.images[i]
        image = Image.open(path).convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
        map_path = Path(str(path).replace("/images/", "/annotations/")).with_suffix(".png")
        grey = Image.open(map_path).convert("L").resize((width, height), Image.Resampling.LANCZOS)
        target = torch.from_numpy(np.array(grey, np.float32))  # (H, W)
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # (3, H, W) uint8
        return pixels, target / target.sum().clamp_min(1e-12), torch.tensor(self.labels[i]), torch.tensor(i)


def write_jpeg_folder(root: Path, n: int, seed: int = 0) -> tuple[list[Path], list[int]]:
    """The authors' layout with `n` JPEGs (quality 90) and PNG maps; returns image paths and labels."""
    rng = np.random.default_rng(seed)
    paths, labels = [], []
    for i in range(n):
        label = i % N_CLASSES
        wnid = f"n{label:08d}"
        image = root / "images" / "train" / wnid / f"{wnid}_{i}.JPEG"
        grey = root / "annotations" / "train" / wnid / f"{wnid}_{i}.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        grey.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(smooth_image(rng, *SOURCE_SIZE)).save(image, format="JPEG", quality=90)
        Image.fromarray(blob_map(rng, *SOURCE_SIZE)).save(grey)
        paths.append(image)
        labels.append(label)
    return paths, labels


def write_store(path: Path, folder: JpegFolder, storage: str) -> Path:
    """Import the folder once (decode, resize) into an HDF5 data file; test = the first 8 rows again."""
    writer = StoreWriter(
        path,
        height=SIZE[0],
        width=SIZE[1],
        class_names=[f"n{c:08d}" for c in range(N_CLASSES)],
        provenance={"benchmark": "loader_throughput"},
        storage=storage,
    )
    items = [folder[i] for i in range(len(folder))]
    images = np.stack([x[0].permute(1, 2, 0).numpy() for x in items])  # (N, H, W, 3)
    maps = np.stack([np.round(x[1].numpy() / x[1].numpy().max() * 255).astype(np.uint8) for x in items])  # (N, H, W)
    labels = np.asarray([int(x[2]) for x in items])
    for split, rows in (("train", np.arange(len(items))), ("test", np.arange(8))):
        writer.create_split(split, len(rows), with_maps=True)
        writer.write_rows(split, rows, images[rows], labels[rows], maps[rows])
    return writer.finalize()


def _batches(dataset: Dataset, workers: int) -> Iterator[int]:
    """Batch sizes of a shuffled loader, epoch after epoch (seeded, so every case reads the same order)."""
    generator = torch.Generator().manual_seed(0)
    loader = DataLoader(
        dataset,
        batch_size=BATCH,
        shuffle=True,
        num_workers=workers,
        collate_fn=collate,
        generator=generator,
        persistent_workers=workers > 0,
    )
    while True:
        for images, _maps, _labels, _rows in loader:
            yield len(images)


def measure(datasets: dict[str, Dataset]) -> dict[tuple[str, int], float]:
    """Images per second of every dataset with every worker count, the main process on one intra-op thread.

    DataLoader workers run torch with one thread; the in-process case (0 workers) gets the same, because the
    items' small tensor ops (map / map.sum()) otherwise wait on OpenMP barriers whenever another process holds the
    second core, which measures the machine's load rather than the storage.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {(name, w): rate(_batches(ds, w), MIN_SECONDS) for name, ds in datasets.items() for w in WORKERS}
    finally:
        torch.set_num_threads(threads)


@register_benchmark("loader")
def run() -> list[Row]:
    """Rows: images/s per source and worker count, then the raw / JPEG ratio per worker count."""
    with tempfile.TemporaryDirectory(prefix="ser-bench-loader-") as tmp:
        root = Path(tmp)
        paths, labels = write_jpeg_folder(root / "jpeg", N_IMAGES)
        folder = JpegFolder(paths, labels, SIZE)
        raw = write_store(root / "raw.h5", folder, "raw")
        datasets = {
            "(a) hdf5 raw": SplitDataset(raw, "train"),
            "(b) hdf5 encoded (png)": SplitDataset(write_store(root / "encoded.h5", folder, "encoded"), "train"),
            "(c) jpeg folder + lanczos": folder,
            "(a1) hdf5 raw, item by item": ItemByItem(raw, "train"),
        }
        rates = measure(datasets)
    note = f"batch {BATCH}, {SIZE[0]}x{SIZE[1]}, shuffled, {N_IMAGES} images"
    rows = [Row("loader", f"{name}, {w} workers", v, "images/s", note) for (name, w), v in rates.items()]
    for w in WORKERS:
        ratio = rates[("(a) hdf5 raw", w)] / rates[("(c) jpeg folder + lanczos", w)]
        rows.append(Row("loader", f"ratio (a)/(c), {w} workers", ratio, "x", "target >= 5x"))
    return rows
