"""Size and compute of every registered backbone under SER: `python -m benchmarks backbones [--json]`.

For each backbone: the parameters of the classifier (100-way head: the paper's 20 tasks x 5 classes) and of the
saliency network (the same backbone as encoder, no head, plus the UNISAL-style decoder, whose widths follow the
encoder's taps), and the FLOPs of one shipped DER++ + SER training step at 64x96 (SynthSal's size): stream batch
8, both replay draws of 8 from a full buffer, the saliency network's own step included, forward and backward. The
step is `benchmarks.train_step_worker`'s (the one `ser train` runs), counted by `torch.utils.flop_counter` through
`benchmarks.compute_peaks.counted_flops`: convolutions and matrix products; elementwise operations and BatchNorm
are not counted. FLOPs do not depend on the device, so this runs on the CPU (about 4 minutes on 2 busy cores).

    python -m benchmarks backbones
    python -m benchmarks backbones --backbones resnet18,mobilenet_v2 --json
    python -m benchmarks backbones --backbones resnet18 --size 288x384    # the paper's size (minutes, ~16 GB)
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from benchmarks.compute_peaks import counted_flops
from benchmarks.train_step_worker import StepConfig, build, random_batch, train_step
from ser_cli.models import backbone_names

HEIGHT, WIDTH = 64, 96
BUFFER = 64  # slots: the draws' FLOPs do not depend on the capacity, only on the draw size


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def measure(backbone: str, height: int = HEIGHT, width: int = WIDTH) -> dict[str, Any]:
    """Parameter counts and the FLOPs of one DER++ + SER step (after one uncounted step, as the train-step sweep)."""
    cfg = StepConfig(method="derpp", ser=True, backbone=backbone, height=height, width=width, buffer_size=BUFFER)
    device = torch.device("cpu")
    _, learner, method = build(cfg, device)
    generator = torch.Generator().manual_seed(2)
    train_step(method, learner, random_batch(cfg, 1, generator), device)
    flops, conv = counted_flops(lambda: train_step(method, learner, random_batch(cfg, 1, generator), device))
    return {
        "backbone": backbone,
        "size": f"{height}x{width}",
        "tap_channels": list(learner.classifier.tap_channels),
        "classifier_params": n_params(learner.classifier),
        "saliency_params": n_params(learner.saliency.net),
        "step_gflop": flops / 1e9,
        "conv_share": conv / flops,
    }


def table(rows: list[dict[str, Any]]) -> Table:
    out = Table(title=f"SER backbones: DER++ + SER step at {rows[0]['size']}, batch 8, two replay draws of 8")
    for column in ("backbone", "taps (channels)", "classifier params", "saliency net params", "GFLOP / step",
                   "conv share"):
        out.add_column(column, justify="left" if column in ("backbone", "taps (channels)") else "right")
    for r in rows:
        out.add_row(r["backbone"], "/".join(map(str, r["tap_channels"])), f"{r['classifier_params']:,}",
                    f"{r['saliency_params']:,}", f"{r['step_gflop']:.2f}", f"{r['conv_share']:.1%}")
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks backbones", description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default=",".join(backbone_names()), help="Comma-separated (default: all).")
    parser.add_argument("--json", action="store_true", help="Print the rows as JSON instead of a table.")
    parser.add_argument("--size", default=f"{HEIGHT}x{WIDTH}", help="Input HxW (default 64x96, SynthSal's).")
    args = parser.parse_args(argv)
    try:
        height, width = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size: expected HxW, e.g. 288x384 (got {args.size!r})")
    rows = [measure(name, height, width) for name in args.backbones.split(",")]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        Console().print(table(rows))
    return 0
