"""Where `ser precompute` gets its maps: a saliency model (or TorchScript oracle), the data's maps, a classical map.

Each source is a callable taking a batch of uint8 images (B, 3, H, W) and the data file's own maps (B, H, W) to
uint8 maps (B, H, W) with each map's maximum at 255 (the maps-file format, `ser_cli.data.maps.quantize_maps`), with
an `identity` (what a resumed work file must have been made from) and the provenance `attrs` the maps file records
(`method`, `model_sha256` or `method_settings`). A `--model` file that is TorchScript is a user's own oracle
(`ser_cli.runs.torchscript_oracle`), recorded as method `torchscript`. `METHODS` names them as `--method`
accepts them and `build_source` makes one by name. Kept apart from the stage, which only decides which rows each
process computes and where the maps go.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from ser_cli.data.maps import FROM_DATASET, MODEL, quantize_maps
from ser_cli.data.store import DataFile
from ser_cli.runtime.device import autocast
from ser_cli.runtime.errors import UserError
from ser_cli.saliency.classical import CLASSICAL


class ModelSource:
    """Maps predicted by a saliency model of any kind `ser_cli.runs.saliency_model` loads (a pretraining or SER run
    `model.pt`, a TorchScript oracle): ImageNet-normalised images -> model -> uint8 maps."""

    def __init__(self, model: Path, device: torch.device, precision: str) -> None:
        from ser_cli.models.normalize import Normalizer
        from ser_cli.runs.saliency_model import load_saliency_model
        from ser_cli.runs.torchscript_oracle import TORCHSCRIPT

        self.model = load_saliency_model(model, device, what="saliency checkpoint")
        self.trained_size = self.model.trained_size  # None: not recorded (a TorchScript oracle, an older file)
        self.identity = self.model.sha256
        self.attrs = {"method": TORCHSCRIPT if self.model.net is None else MODEL, "model_sha256": self.identity}
        self.device, self.precision = device, precision
        self.normalize = Normalizer(device)
        if device.type == "cuda":
            # Same batch, same bytes: a resumed or sharded run must reproduce an uninterrupted one.
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True

    @torch.inference_mode()
    def __call__(self, images: Tensor, maps: Tensor) -> Tensor:
        """uint8 images (B, 3, H, W) -> uint8 maps (B, H, W); `maps` (the data's own) is not used."""
        x = self.normalize(images)  # (B, 3, H, W) float
        with autocast(self.precision, self.device):
            pred = self.model.maps(x)  # (B, H, W), >= 0
        return quantize_maps(pred)


class DatasetSource:
    """The data file's own maps (as `SplitDataset` reads them, sum 1), requantised to the maps-file format."""

    identity = FROM_DATASET
    attrs = {"method": FROM_DATASET, "model_sha256": FROM_DATASET}

    def __init__(self, data: DataFile) -> None:
        if not data.has_maps:
            raise UserError(f"{data.path}: holds no saliency maps to copy (--from-dataset); give --model instead")

    def __call__(self, images: Tensor, maps: Tensor) -> Tensor:
        """Ground-truth maps (B, H, W) float -> uint8 (B, H, W) with max 255."""
        return quantize_maps(maps)


class ClassicalSource:
    """Maps computed from the pixels alone by a classical method, on the CPU whatever the device (same bytes)."""

    def __init__(self, name: str) -> None:
        self.method = CLASSICAL.lookup(name)
        self.identity = name
        self.attrs = {"method": name, "method_settings": json.dumps(self.method.settings, sort_keys=True)}

    def __call__(self, images: Tensor, maps: Tensor) -> Tensor:
        """uint8 images (B, 3, H, W) -> uint8 maps (B, H, W) with max 255; `maps` (the data's own) is not used."""
        return quantize_maps(self.method(images.cpu()))


Source = ModelSource | DatasetSource | ClassicalSource
METHODS = (MODEL, FROM_DATASET, *CLASSICAL.names())


def build_source(method: str, data: DataFile, model: Path | None, dev: torch.device, precision: str) -> Source:
    """The source of `method` (one of `METHODS`); `model` is the saliency model's file for `method="model"`."""
    if method == MODEL:
        return ModelSource(Path(model), dev, precision)
    return DatasetSource(data) if method == FROM_DATASET else ClassicalSource(method)
