"""The one loader of a saliency model, whatever made it (`ser predict`, `ser precompute`, `ser train`, the API).

Three kinds of file hold one:
- a `ser pretrain-saliency` `model.pt` (`ser_cli.runs.saliency_file`): the network itself;
- a `ser train` SER run's `model.pt` (`ser_cli.runs.run_io`): its saliency branch (`learner.saliency.net`, which the
  run fine-tuned online); a run without SER has none;
- a user's TorchScript oracle (`ser_cli.runs.torchscript_oracle`): any module under the documented contract. It
  can make SER's targets (`ser precompute`) and predict (`ser predict`), but it cannot be SER's branch (`ser train`
  needs a `SaliencyNet`, `need_network=True`).
A pretraining file records the input size it was trained at and its training data (path and fingerprint); a run
records its training data. `predict` resizes images to a size (LANCZOS, as the data files are made:
`ser_cli.data.importers.resize`), normalises them with the ImageNet statistics and predicts in eval mode; `map_at`
resizes each map back to its image's size (bilinear, antialiased when shrinking) and scales it to 255 at its
maximum, the maps-file convention (`ser_cli.data.maps.quantize_maps`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ser_cli.data.importers.resize import resize_image
from ser_cli.models.normalize import Normalizer
from ser_cli.models.saliency_net import SaliencyNet
from ser_cli.runs import run_io
from ser_cli.runs import saliency_file as checkpoint
from ser_cli.runs.model_input import recorded_size
from ser_cli.runs.torchscript_oracle import TORCHSCRIPT, is_torchscript, load_oracle, oracle_maps
from ser_cli.runtime.checkpoint import check_format_version
from ser_cli.runtime.errors import UserError
from ser_cli.runtime.hashing import file_sha256
from ser_cli.runtime.torch_file import read_torch_file

MADE_BY = {checkpoint.KIND: ("ser pretrain-saliency", checkpoint.FORMAT_VERSION),
           run_io.KIND: ("ser train", run_io.FORMAT_VERSION)}
WHERE_FROM = "give the model.pt of `ser pretrain-saliency` or of a `ser train` SER run, or a TorchScript oracle"


@dataclass
class SaliencyModel:
    """A saliency model in eval mode on its device, and what its file says about where it came from."""

    path: Path
    net: SaliencyNet | None  # None: a TorchScript oracle (`module`)
    module: torch.jit.ScriptModule | None
    made_by: str  # "ser pretrain-saliency", "ser train" or "torchscript"
    data: str | None  # the training data file's path as recorded (may have moved since)
    data_fingerprint: str | None
    trained_size: tuple[int, int] | None  # (H, W) the network was trained at, when its file records it
    sha256: str

    def maps(self, x: Tensor) -> Tensor:
        """An ImageNet-normalised batch (B, 3, H, W) -> non-negative float maps (B, H, W), in the caller's mode."""
        if self.net is not None:
            return self.net(x)[0][:, 0]  # (B, H, W) in (0, 1)
        return oracle_maps(self.module, x, self.path)

    @torch.inference_mode()
    def predict(self, images: list[Image.Image], size: tuple[int, int]) -> Tensor:
        """RGB images of any sizes -> float maps (B, H, W) at the model input size `size` = (H, W)."""
        device = _device_of(self.net if self.net is not None else self.module)
        batch = torch.from_numpy(np.stack([resize_image(im, size) for im in images]))  # (B, H, W, 3) uint8
        x = Normalizer(device)(batch.permute(0, 3, 1, 2))  # (B, 3, H, W) float
        return self.maps(x).float().cpu()


def load_saliency_model(path: Path | str, device: torch.device | str = "cpu", *, what: str = "model",
                        need_network: bool = False) -> SaliencyModel:
    """The saliency model in `path` (any of the three kinds), on `device`, in eval mode.

    Args:
        what: What the caller calls the file in the message for a missing one (`{path}: {what} not found`).
        need_network: Refuse a TorchScript oracle (SER's branch must be a `SaliencyNet` it can train).

    Raises:
        UserError: missing or unreadable file, another kind of file, a newer format, a run without SER, bad weights.
    """
    path, device = Path(path), torch.device(device)
    if path.is_file() and is_torchscript(path):  # never open a FIFO: it would block
        if need_network:
            raise UserError(f"{path}: a TorchScript model can make SER's targets (`ser precompute --model`) but not "
                            "be its saliency branch, which must be a `ser pretrain-saliency` model.pt")
        return SaliencyModel(path, None, load_oracle(path, device), TORCHSCRIPT, None, None, None, file_sha256(path))
    payload = read_torch_file(path, missing=f"{what} not found; {WHERE_FROM}", device=device)
    kind = payload.get("kind") if isinstance(payload, dict) else None
    if kind not in MADE_BY:
        raise UserError(f"{path}: not a model written by `ser pretrain-saliency` or `ser train`; {WHERE_FROM}")
    made_by, version = MADE_BY[kind]
    check_format_version(path, payload, version)
    config, weights, data = _saliency_part(path, payload) if kind == run_io.KIND else (
        payload.get("config"), payload.get("state_dict"), _get(payload, "meta", "data"))
    fingerprint = _get(payload, "provenance", "data_fingerprint") or payload.get("data_fingerprint")
    net = checkpoint.saliency_net_from(path, config, weights).to(device).eval()
    return SaliencyModel(path, net, None, made_by, _text(data), _text(fingerprint), recorded_size(payload.get("meta")),
                         file_sha256(path))


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.empty(0)).device


def _get(payload: dict[str, Any], section: str, key: str) -> Any:
    """payload[section][key], or None when either is missing or the section is not a mapping (a crafted file)."""
    part = payload.get(section)
    return part.get(key) if isinstance(part, dict) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _saliency_part(path: Path, payload: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(config, weights, training data) of a run's saliency branch."""
    learner = payload.get("learner")
    if not isinstance(learner, dict) or "saliency" not in learner:
        raise UserError(f"{path}: a `ser train` run without SER has no saliency branch (not a model written by "
                        "`ser pretrain-saliency` or a SER run); give one of those")
    net = learner["saliency"].get("net") if isinstance(learner["saliency"], dict) else None
    return learner.get("saliency_config"), net, _get(payload, "provenance", "data")


def map_at(pred: Tensor, size: tuple[int, int]) -> np.ndarray:
    """One map (h, w) in (0, 1) -> uint8 (H, W) at `size` = (H, W), 255 at its maximum (a zero map stays zero)."""
    shrink = size[0] < pred.shape[0] or size[1] < pred.shape[1]
    resized = F.interpolate(pred[None, None].double(), size=size, mode="bilinear", align_corners=False,
                            antialias=shrink)[0, 0].clamp_min(0)  # (H, W)
    peak = float(resized.max())
    scaled = resized * (255.0 / peak) if peak > 0 else resized
    return scaled.round().clamp(0, 255).to(torch.uint8).numpy()
