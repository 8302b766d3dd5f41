"""Saliency-predictor checkpoints (`model.pt` of `ser pretrain-saliency`): weights plus what rebuilds the network.

Format 1 is a dict: `kind = "ser-saliency"`, `format_version`, `config` (`SaliencyNet.config()`), `state_dict`,
`data_fingerprint` (the data file it was trained on) and free-form `meta` (params, metrics). Loading checks the
kind and rebuilds the network from `config`, so a checkpoint of another architecture is caught by name, not by a
shape error deep in `load_state_dict`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ser_cli.models.saliency_net import SaliencyNet
from ser_cli.runtime.checkpoint import load_artifact, save_checkpoint
from ser_cli.runtime.hashing import file_sha256  # noqa: F401 - re-exported: outputs derived from a checkpoint record it

KIND = "ser-saliency"
FORMAT_VERSION = 1


def save_saliency_checkpoint(path: Path, net: SaliencyNet, data_fingerprint: str, meta: dict[str, Any]) -> None:
    """Write atomically (temporary name, then rename)."""
    payload = {"kind": KIND, "format_version": FORMAT_VERSION, "config": net.config(),
               "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
               "data_fingerprint": data_fingerprint, "meta": meta}
    save_checkpoint(path, payload)


def load_saliency_checkpoint(path: Path, device: torch.device | str = "cpu") -> tuple[SaliencyNet, dict[str, Any]]:
    """Rebuild the network from `path`; returns it (eval mode) and the whole payload."""
    payload = load_artifact(path, KIND, FORMAT_VERSION, "ser pretrain-saliency", "saliency checkpoint", device)
    net = SaliencyNet(**payload["config"])
    net.load_state_dict(payload["state_dict"])
    return net.to(device).eval(), payload

