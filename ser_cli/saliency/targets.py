"""Where SER's saliency targets come from, the check that they do not come from S itself, and S's start on them.

SER trains its saliency branch S, during continual learning, against maps of an oracle unrelated to S (Bellitto et
al., NeurIPS 2024, sections 3.2 and 4.1: DeepGaze IIE pseudo-labels; method.md section 1). Maps precomputed with S's
own pretrained weights make the saliency loss vanish from the first step (the branch already predicts them), so SER
degenerates into a frozen, self-consistent branch. `ser train` therefore refuses them unless asked
(`train.allow_self_targets`), records the target source in `run.json` and measures the branch's CC against the
targets before its first step (near 1: the targets teach nothing).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ser_cli.data.dataset import SplitDataset
from ser_cli.data.maps import FROM_DATASET, MapsFile
from ser_cli.data.store import DataFile
from ser_cli.runtime.errors import UserError

START_CC_IMAGES = 256  # enough for a CC mean to 2 decimals; a few seconds at 288x384 on a CPU
DATA_FILE = "data file"
MAPS_FILE = "maps file"


@dataclass(frozen=True)
class TargetSource:
    """What SER's targets are.

    Attributes:
        kind: `maps file` (`ser precompute`'s output) or `data file` (the data file's own maps: on SynthSal or an
            imported fixation dataset, the ground truth).
        method: What made them: `model` (a saliency checkpoint), `torchscript` (a user's oracle), `from-dataset`,
            or a classical method's name.
        model_sha256: sha256 of the predictor file that made them (None when no predictor did).
        maps_sha256: sha256 of the maps file (None for the data file's own maps; the data fingerprint covers them).
        self_made: True when that predictor is `train.saliency_checkpoint` itself.
    """

    kind: str
    method: str
    model_sha256: str | None
    maps_sha256: str | None
    self_made: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def label(self) -> str:
        """One short string for tables and logs: `from-dataset`, `model 1a2b3c4`, `self (model 1a2b3c4)`."""
        text = self.method if self.model_sha256 in (None, FROM_DATASET) else f"{self.method} {self.model_sha256[:7]}"
        return f"self ({text})" if self.self_made else text


def target_source(maps: MapsFile | None, saliency_sha256: str | None) -> TargetSource:
    """The source of the targets SER reads: `maps`, or the data file's own maps when `maps` is None."""
    from ser_cli.runtime.hashing import file_sha256

    if maps is None:
        return TargetSource(DATA_FILE, FROM_DATASET, None, None)
    made_by = maps.model_sha256 if maps.model_sha256 != FROM_DATASET else None
    return TargetSource(MAPS_FILE, maps.method, made_by, file_sha256(maps.path),
                        self_made=made_by is not None and made_by == saliency_sha256)


def check_not_self_made(source: TargetSource, maps_path: Path | None, checkpoint: str | None, allow: bool) -> None:
    """Refuse (one line) SER targets made by the very checkpoint the branch starts from, unless `allow`."""
    if source.self_made and not allow:
        raise UserError(
            f"--maps {maps_path}: was made by train.saliency_checkpoint {checkpoint} itself, so SER's saliency loss "
            "has nothing to teach; make targets with an oracle unrelated to it (`ser precompute --from-dataset`, or "
            "--model ORACLE) or set train.allow_self_targets=true to run that degenerate variant on purpose")


@torch.no_grad()
def start_cc(net: torch.nn.Module, data: DataFile, maps_path: Path | None, device: torch.device,
             n_images: int = START_CC_IMAGES) -> float:
    """Mean CC of the branch's predictions (eval mode) against its targets on the first `n_images` training rows.

    Measured before the first step: near 1 means the targets are (nearly) what S already predicts.
    """
    from ser_cli.metrics.saliency import cc
    from ser_cli.models.normalize import Normalizer

    # The dataset's batch reader, not a DataLoader: a DataLoader draws its base seed from torch's global generator,
    # which would shift every random number of the run that follows.
    dataset = SplitDataset(data.path, "train", np.arange(min(n_images, data.splits["train"].size)), maps_path)
    normalize, was_training = Normalizer(device), net.training
    net.eval()
    scores = []
    try:
        for start in range(0, len(dataset), 32):
            images, targets, _labels, _rows = dataset.__getitems__(list(range(start, min(start + 32, len(dataset)))))
            pred, _ = net(normalize(images.to(device)))  # (B, 1, H, W)
            scores.append(cc(pred[:, 0].float(), targets.to(device)).double().cpu())
    finally:
        dataset.close()
        net.train(was_training)
    return float(torch.cat(scores).mean()) if scores else float("nan")
