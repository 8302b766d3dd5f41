"""Where `ser precompute` gets its maps: a saliency checkpoint, a TorchScript oracle, the data's maps, a classical map.

Each source is a callable taking a batch of uint8 images (B, 3, H, W) and the data file's own maps (B, H, W) to
uint8 maps (B, H, W) with each map's maximum at 255 (the maps-file format, `ser_cli.data.maps.quantize_maps`), with
an `identity` (what a resumed work file must have been made from) and the provenance `attrs` the maps file records
(`method`, `model_sha256` or `method_settings`). A `--model` file that is TorchScript is a user's own oracle
(`ser_cli.saliency.torchscript_oracle`), recorded as method `torchscript`. `METHODS` names them as `--method`
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
    """Maps predicted by a saliency checkpoint: ImageNet-normalised images -> SaliencyNet -> uint8 maps."""

    def __init__(self, model: Path, device: torch.device, precision: str) -> None:
        from ser_cli.models.checkpoint import file_sha256, load_saliency_checkpoint
        from ser_cli.models.normalize import Normalizer
        from ser_cli.saliency.model_input import recorded_size

        self.net, payload = load_saliency_checkpoint(model, device)
        self.trained_size = recorded_size(payload.get("meta"))  # None: a file from before the record
        self.identity = file_sha256(model)
        self.attrs = {"method": MODEL, "model_sha256": self.identity}
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
            pred, _ = self.net(x)  # (B, 1, H, W) in (0, 1)
        return quantize_maps(pred)


class TorchScriptSource:
    """Maps of a user's TorchScript oracle (contract: `ser_cli.saliency.torchscript_oracle`), recorded as its sha256."""

    def __init__(self, model: Path, device: torch.device, precision: str) -> None:
        from ser_cli.models.normalize import Normalizer
        from ser_cli.runtime.hashing import file_sha256
        from ser_cli.saliency.torchscript_oracle import TORCHSCRIPT, load_oracle

        self.path, self.module = model, load_oracle(model, device)
        self.identity = file_sha256(model)
        self.attrs = {"method": TORCHSCRIPT, "model_sha256": self.identity}
        self.device, self.precision = device, precision
        self.normalize = Normalizer(device)

    @torch.inference_mode()
    def __call__(self, images: Tensor, maps: Tensor) -> Tensor:
        """uint8 images (B, 3, H, W) -> uint8 maps (B, H, W); `maps` (the data's own) is not used."""
        from ser_cli.saliency.torchscript_oracle import oracle_maps

        x = self.normalize(images)  # (B, 3, H, W) float
        with autocast(self.precision, self.device):
            pred = oracle_maps(self.module, x, self.path)  # (B, H, W) float, >= 0
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


Source = ModelSource | TorchScriptSource | DatasetSource | ClassicalSource
METHODS = (MODEL, FROM_DATASET, *CLASSICAL.names())


def build_source(method: str, data: DataFile, model: Path | None, dev: torch.device, precision: str) -> Source:
    """The source of `method` (one of `METHODS`); `model` is the predictor's checkpoint for `method="model"`."""
    if method == MODEL:
        from ser_cli.saliency.torchscript_oracle import is_torchscript

        path = Path(model)
        return TorchScriptSource(path, dev, precision) if is_torchscript(path) else ModelSource(path, dev, precision)
    return DatasetSource(data) if method == FROM_DATASET else ClassicalSource(method)
