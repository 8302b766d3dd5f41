"""A user's own saliency model as SER's oracle: a TorchScript file (`ser precompute --model oracle.ts`).

SER trains its saliency branch against maps of an oracle unrelated to the branch (Bellitto et al., NeurIPS 2024,
sections 3.2 and 4.1: DeepGaze IIE pseudo-labels; method.md section 1). The authors never released that step. Any
predictor a user can export with `torch.jit.script` or `torch.jit.trace` can play the oracle, under this contract:

- input: one float32 batch (B, 3, H, W), RGB, ImageNet-normalised (`(x / 255 - mean) / std`, mean 0.485 0.456
  0.406, std 0.229 0.224 0.225), H x W the data file's image size;
- output: one non-negative map per image, (B, 1, h, w) or (B, h, w), any scale (log-densities must be
  exponentiated inside the exported module); a map of another size is resized bilinearly to H x W.

A file that breaks the contract (not TorchScript, another batch size, a negative or non-finite value) stops the
command with one line naming the file. The maps file records method `torchscript` and the file's sha256.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ser_cli.runtime.errors import UserError

TORCHSCRIPT = "torchscript"


def is_torchscript(path: Path) -> bool:
    """True when `path` is a TorchScript archive (`torch.jit.save`), whose zip holds compiled `code/`.

    `torch.save` files are zip archives too, but hold only `data.pkl` and tensors, never a `code/` folder.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name or name.startswith("code/") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def load_oracle(path: Path, device: torch.device) -> torch.jit.ScriptModule:
    """The TorchScript module of `path` on `device`, in eval mode; UserError when it does not load."""
    try:
        module = torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"--model {path}: not a loadable TorchScript model ({first})") from None
    return module.eval()


def oracle_maps(module: torch.jit.ScriptModule, x: Tensor, path: Path) -> Tensor:
    """Run the oracle on a normalised batch x (B, 3, H, W); returns float maps (B, H, W), checked.

    Raises:
        UserError: the output breaks the contract (shape, sign or finiteness).
    """
    batch, _, height, width = x.shape
    out = module(x)
    if not isinstance(out, Tensor):
        raise UserError(f"--model {path}: returned {type(out).__name__}, expected one tensor of maps (B, 1, h, w)")
    if out.dim() == 4 and out.shape[1] == 1:
        out = out[:, 0]
    if out.dim() != 3 or out.shape[0] != batch:
        raise UserError(f"--model {path}: returned shape {tuple(out.shape)} for a batch of {batch}; the contract is "
                        "one map per image, (B, 1, h, w) or (B, h, w)")
    out = out.float()
    if not torch.isfinite(out).all():
        raise UserError(f"--model {path}: returned NaN or infinite values; the contract is finite non-negative maps")
    if (out < 0).any():
        raise UserError(f"--model {path}: returned negative values (min {out.min().item():.3g}); the contract is "
                        "non-negative maps (exponentiate log-densities inside the exported model)")
    if out.shape[-2:] != (height, width):
        out = F.interpolate(out[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    return out  # (B, H, W)
