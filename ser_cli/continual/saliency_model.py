"""The saliency predictor inside a `model.pt` of either kind, applied to images of any size (`ser predict`).

A `ser pretrain-saliency` checkpoint (`ser_cli.models.checkpoint`) holds the network itself; a `ser train` run
(`ser_cli.continual.run_io`) trained with SER holds it as its saliency branch (`learner.saliency.net`, which the
run fine-tuned online), a run without SER has none. Neither records the input size the network was trained at,
only the data file it was trained on (path and fingerprint), from which the caller may read it. Images are resized
to that size (LANCZOS, as the data files are made: `ser_cli.data.importers.resize`), normalised with the ImageNet
statistics and predicted in eval mode; each map is resized back to its image's size (bilinear, antialiased when
shrinking) and scaled to 255 at its maximum, the maps-file convention (`ser_cli.data.maps.quantize_maps`).
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

from ser_cli.continual import run_io
from ser_cli.data.importers.resize import resize_image
from ser_cli.models import checkpoint
from ser_cli.models.normalize import Normalizer
from ser_cli.models.saliency_net import SaliencyNet
from ser_cli.runtime.checkpoint import check_format_version
from ser_cli.runtime.errors import UserError
from ser_cli.runtime.hashing import file_sha256

MADE_BY = {checkpoint.KIND: ("ser pretrain-saliency", checkpoint.FORMAT_VERSION),
           run_io.KIND: ("ser train", run_io.FORMAT_VERSION)}


@dataclass
class SaliencyModel:
    """A saliency network in eval mode on its device, and what its file says about where it came from."""

    path: Path
    net: SaliencyNet
    made_by: str
    data: str | None  # the training data file's path as recorded (may have moved since)
    data_fingerprint: str | None
    sha256: str

    @torch.inference_mode()
    def predict(self, images: list[Image.Image], size: tuple[int, int]) -> Tensor:
        """RGB images of any sizes -> float maps (B, H, W) in (0, 1) at the model input size `size` = (H, W)."""
        device = next(self.net.parameters()).device
        batch = torch.from_numpy(np.stack([resize_image(im, size) for im in images]))  # (B, H, W, 3) uint8
        x = Normalizer(device)(batch.permute(0, 3, 1, 2))  # (B, 3, H, W) float
        pred, _ = self.net(x)  # (B, 1, H, W)
        return pred[:, 0].float().cpu()


def load_saliency_model(path: Path, device: torch.device | str = "cpu") -> SaliencyModel:
    """The saliency network of a `ser pretrain-saliency` model.pt or of a `ser train` SER run's model.pt.

    Raises:
        UserError: missing or unreadable file, another kind of file, a newer format, or a run without SER.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: model not found; give the model.pt of `ser pretrain-saliency` or of a "
                        "`ser train` run")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user mistake
        raise UserError(f"{path}: not a readable torch checkpoint ({type(err).__name__})") from None
    kind = payload.get("kind") if isinstance(payload, dict) else None
    if kind not in MADE_BY:
        raise UserError(f"{path}: not a model written by `ser pretrain-saliency` or `ser train`")
    made_by, version = MADE_BY[kind]
    check_format_version(path, payload, version)
    config, weights, data = _saliency_part(path, payload) if kind == run_io.KIND else (
        payload.get("config"), payload.get("state_dict"), _get(payload, "meta", "data"))
    fingerprint = _get(payload, "provenance", "data_fingerprint") or payload.get("data_fingerprint")
    net = checkpoint.saliency_net_from(path, config, weights)
    return SaliencyModel(path, net.to(device).eval(), made_by, _text(data), _text(fingerprint), file_sha256(path))


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
        raise UserError(f"{path}: a `ser train` run without SER has no saliency branch; give a SER run's model.pt "
                        "or a `ser pretrain-saliency` model.pt")
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
