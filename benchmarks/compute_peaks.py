"""What the hardware does at best, measured in the benchmark's own process: a large matmul and one convolution.

A step's achieved rate (FLOPs / seconds) means little alone; set beside the same process's best N x N matmul
(sgemm on CPU, the step's bf16 on CUDA) and the best forward + backward rate among the network's own 3x3
convolutions at the step's size and batch, it says how close to the machine's limit the step runs. The
convolution peak is the best of the network's distinct 3x3 stride-1 shapes (one per ResNet stage), not the first
stage's alone: with few channels at full resolution (the reduced ResNet's 20) that one is memory-bound and runs
slower than the step as a whole. FLOPs follow `torch.utils.flop_counter`'s convention: 2 per multiply-add,
convolutions and matrix products only.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class ConvSpec:
    """A 3x3 stride-1 convolution as the network runs it: channels, input and output sizes, padding."""

    in_channels: int
    out_channels: int
    height: int
    width: int
    out_height: int
    out_width: int
    padding: int

    def flops(self, batch: int) -> int:
        """Forward + backward (input and weight gradients) FLOPs: 3 x 2 B C_out H_out W_out C_in 9."""
        return 3 * 2 * batch * self.out_channels * self.out_height * self.out_width * self.in_channels * 9


def sync(device: torch.device) -> None:
    """Wait for the device, so that wall-clock time covers the work (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Fastest of `repeats` timed calls of `fn`, after one untimed call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def counted_flops(fn: Callable[[], object]) -> tuple[int, int]:
    """(all FLOPs, convolution FLOPs) `torch.utils.flop_counter` counts in one call of `fn`, forward and backward."""
    with FlopCounterMode(display=False) as counter:
        fn()
    per_op = counter.get_flop_counts().get("Global", {})
    conv = sum(n for op, n in per_op.items() if "convolution" in str(op))
    return counter.get_total_flops(), conv


def matmul_peak(n: int, dtype: torch.dtype, device: torch.device, repeats: int) -> dict[str, Any]:
    """GFLOP/s of an (n, n) @ (n, n) product in `dtype`, best of `repeats`."""
    a, b = torch.randn((n, n), device=device, dtype=dtype), torch.randn((n, n), device=device, dtype=dtype)
    seconds = best_seconds(lambda: a @ b, repeats, device)
    return {"n": n, "dtype": str(dtype).removeprefix("torch."), "gflop_per_s": 2 * n**3 / seconds / 1e9}


def conv_shapes(net: nn.Module, height: int, width: int, device: torch.device) -> list[ConvSpec]:
    """The distinct 3x3 stride-1 convolutions of `net` (a `Backbone`) on an (H, W) input, in network order.

    In these ResNet-18s: the stem, then one per stage (nf -> nf at full resolution, 2nf at half, ...). Runs one
    forward without gradients; in train mode that moves the BatchNorm statistics, so call it after measuring.
    """
    seen: list[ConvSpec] = []

    def record(module: nn.Conv2d, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        if module.kernel_size == (3, 3) and module.stride == (1, 1):
            (_, _, h, w), (_, _, oh, ow) = inputs[0].shape, output.shape
            spec = ConvSpec(module.in_channels, module.out_channels, h, w, oh, ow, module.padding[0])
            if spec not in seen:
                seen.append(spec)

    hooks = [m.register_forward_hook(record) for m in net.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            net.features(torch.zeros((1, 3, height, width), device=device))
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def conv_rate(
    spec: ConvSpec,
    batch: int,
    device: torch.device,
    repeats: int,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> float:
    """GFLOP/s of `spec` forward + backward on `batch` images, best of `repeats`, under the step's autocast."""
    conv = nn.Conv2d(spec.in_channels, spec.out_channels, 3, padding=spec.padding, bias=False)
    conv = conv.to(device, memory_format=memory_format)
    x = torch.randn((batch, spec.in_channels, spec.height, spec.width), device=device)  # (B, C_in, H, W)
    x = x.to(memory_format=memory_format).requires_grad_(True)
    with autocast():
        grad = torch.randn_like(conv(x))  # (B, C_out, H_out, W_out), the output's dtype

    def forward_backward() -> None:
        with autocast():
            y = conv(x)
        y.backward(grad)

    return spec.flops(batch) / best_seconds(forward_backward, repeats, device) / 1e9


def conv_peak(specs: list[ConvSpec], batch: int, device: torch.device, repeats: int, **kwargs: Any) -> dict[str, Any]:
    """The best `conv_rate` over `specs` (`kwargs`: autocast, memory_format), with every shape's rate."""
    shapes = [
        {
            **asdict(spec),
            "batch": batch,
            "flop": spec.flops(batch),
            "gflop_per_s": conv_rate(spec, batch, device, repeats, **kwargs),
        }
        for spec in specs
    ]
    best = max(shapes, key=lambda shape: shape["gflop_per_s"])
    return {"gflop_per_s": best["gflop_per_s"], "best": best, "shapes": shapes}
