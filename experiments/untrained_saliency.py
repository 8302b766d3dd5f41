"""Write a saliency checkpoint that was never trained: `python -m experiments.untrained_saliency OUT [--seed 0]`.

The control "SER without saliency knowledge": the same network as `ser pretrain-saliency` writes, with its seeded
random initialisation, so `ser train --ser` modulates the classifier with features that know nothing of saliency.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ser_cli.models.saliency_net import SaliencyNet
from ser_cli.runs.saliency_file import save_saliency_checkpoint


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="checkpoint to write, e.g. models/saliency_untrained/model.pt")
    parser.add_argument("--backbone", default="resnet18_reduced")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.out.exists():
        return  # idempotent, like the ser commands a grid reruns
    torch.manual_seed(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_saliency_checkpoint(args.out, SaliencyNet(args.backbone), "untrained", {"untrained": True, "seed": args.seed})


if __name__ == "__main__":
    main()
