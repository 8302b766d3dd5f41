"""`ser precompute` speed: maps per second at the paper's 288x384, per backbone, on CPU and (when present) CUDA.

The predictor is freshly initialised (speed does not depend on the weights) and saved as a `ser pretrain-saliency`
checkpoint; the stage runs exactly as `ser precompute` does (DataLoader, normalisation, forward, quantisation,
resumable work file, assembly) on a small data file, twice: the first run warms up (oneDNN / cuDNN kernel
selection, first allocations) and the second is reported. The number is the stage's own `maps_per_second`
metric. Run it with `python -m benchmarks precompute`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import Row, register_benchmark, smooth_image
from ser_cli.config import PrecomputeConfig
from ser_cli.data.writer import StoreWriter
from ser_cli.models import SaliencyNet
from ser_cli.runs.saliency_file import save_saliency_checkpoint

SIZE = (288, 384)  # (H, W)
# (backbone, device) -> (train images, test images, batch size): a few batches each, sized for 2 CPU cores.
CASES = {
    ("resnet18_reduced", "cpu"): (8, 4, 4),
    ("resnet18", "cpu"): (2, 2, 2),
    ("resnet18_reduced", "cuda"): (96, 32, 32),
    ("resnet18", "cuda"): (96, 32, 32),
}


def write_data(path: Path, n_train: int, n_test: int) -> Path:
    """A data file of smooth images at SIZE (labels and maps do not matter for speed)."""
    rng = np.random.default_rng(0)
    writer = StoreWriter(
        path, height=SIZE[0], width=SIZE[1], class_names=["a", "b"], provenance={"benchmark": "precompute_speed"}
    )
    for split, n in (("train", n_train), ("test", n_test)):
        images = np.stack([smooth_image(rng, *SIZE) for _ in range(n)])  # (n, H, W, 3)
        writer.create_split(split, n)
        writer.write_rows(split, np.arange(n), images, np.arange(n) % 2)
    return writer.finalize()


def maps_per_second(root: Path, backbone: str, device: str) -> float:
    """The stage's `maps_per_second` on its second run (the first warms up)."""
    from stages import precompute

    n_train, n_test, batch = CASES[(backbone, device)]
    data = write_data(root / f"{backbone}-{device}.h5", n_train, n_test)
    model = root / f"{backbone}.pt"
    torch.manual_seed(0)
    save_saliency_checkpoint(model, SaliencyNet(backbone).eval(), "0" * 64, {"benchmark": True})
    cfg = PrecomputeConfig(batch_size=batch, compression="gzip")
    result = None
    for attempt in range(2):
        result = precompute.run(cfg, data, root / f"maps-{attempt}.h5", model=model, device=device)
    return float(result.metrics["maps_per_second"])


@register_benchmark("precompute")
def run() -> list[Row]:
    """Rows: maps/s per backbone on CPU, then on CUDA or a 'skipped' row."""
    os.environ.setdefault("SER_QUIET", "1")  # no progress bars between the table rows
    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="ser-bench-precompute-") as tmp:
        for backbone, device in CASES:
            if device not in devices:
                continue
            n_train, n_test, batch = CASES[(backbone, device)]
            value = maps_per_second(Path(tmp), backbone, device)
            precision = "bf16 autocast" if device == "cuda" else "fp32"
            note = f"{SIZE[0]}x{SIZE[1]}, batch {batch}, {n_train + n_test} maps, {precision}"
            rows.append(Row("precompute", f"{backbone} on {device}", value, "maps/s", note))
    if "cuda" not in devices:
        rows.append(Row("precompute", "cuda", None, "maps/s", "skipped: no CUDA device on this machine"))
    return rows
