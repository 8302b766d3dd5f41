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
from ser_cli.runtime.checkpoint import first_nonfinite, load_artifact, refuse_nonfinite, save_checkpoint
from ser_cli.runtime.errors import UserError
from ser_cli.runtime.hashing import file_sha256  # noqa: F401 - re-exported: outputs derived from a checkpoint record it

KIND = "ser-saliency"
FORMAT_VERSION = 1


def save_saliency_checkpoint(path: Path, net: SaliencyNet, data_fingerprint: str, meta: dict[str, Any]) -> None:
    """Write atomically (temporary name, then rename); RunFailure, nothing written, when a weight is not finite."""
    refuse_nonfinite(net.state_dict(), f"{path}: not written: saliency weight")
    payload = {"kind": KIND, "format_version": FORMAT_VERSION, "config": net.config(),
               "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
               "data_fingerprint": data_fingerprint, "meta": meta}
    save_checkpoint(path, payload)


def load_saliency_checkpoint(path: Path, device: torch.device | str = "cpu") -> tuple[SaliencyNet, dict[str, Any]]:
    """Rebuild the network from `path`; returns it (eval mode) and the whole payload."""
    payload = load_artifact(path, KIND, FORMAT_VERSION, "ser pretrain-saliency", "saliency checkpoint", device)
    net = saliency_net_from(Path(path), payload.get("config"), payload.get("state_dict"))
    return net.to(device).eval(), payload


def saliency_net_from(path: Path, config: Any, state: Any) -> SaliencyNet:
    """The network a file's `config` and weights describe, validated before anything is allocated or run.

    Raises:
        UserError: a config that is not `SaliencyNet.config()`'s keys with sane values, weights that are missing,
            do not fit the architecture, or hold NaN or inf (a diverged training: its maps would be all zero).
    """
    if not isinstance(config, dict) or set(config) != {"backbone", "n_gaussians"}:
        raise UserError(f"{path}: its config must be a mapping of backbone and n_gaussians (got "
                        f"{sorted(config) if isinstance(config, dict) else type(config).__name__})")
    if not isinstance(config["backbone"], str) or type(config["n_gaussians"]) is not int:
        raise UserError(f"{path}: its config holds a backbone that is no name or an n_gaussians that is no integer")
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: holds no weights (its state_dict is empty or not a mapping of tensors)")
    bad = first_nonfinite(state)
    if bad is not None:
        raise UserError(f"{path}: weight {bad} holds NaN or inf (the training diverged); retrain the model")
    try:
        net = SaliencyNet(**config)  # bounds n_gaussians and checks the backbone's name before building anything big
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
    try:
        net.load_state_dict(state)
    except RuntimeError as err:  # missing or unexpected keys, other shapes: the text's second line names the first
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise UserError(f"{path}: its weights do not fit its config ({lines[-1][:160]})") from None
    return net

