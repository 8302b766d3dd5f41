"""Device and precision choice: `--device auto|cpu|cuda|cuda:N|cuda:auto`, bf16 autocast on CUDA, fp32 on CPU."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable

import torch

from ser_cli.runtime.errors import UserError
from ser_cli.runtime.gpu_slots import claim_slot

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+|cuda:auto)$")


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; `cuda:auto` a GPU no other `ser` process holds (`runtime.gpu_slots`, for
    several jobs on one machine); asking for CUDA on a machine without it is a usage error."""
    if not DEVICE_PATTERN.match(name):
        raise UserError(f"--device: must be auto, cpu, cuda, cuda:N or cuda:auto (got {name!r})")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
        if name == "cuda:auto":
            return torch.device("cuda", claim_slot(torch.cuda.device_count(), on_wait=_say_waiting))
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
    return torch.device(name)


def use_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast for `bf16`, or for `auto` on CUDA; never on CPU with `auto`."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def memory_format_for(name: str, precision: str, device: torch.device) -> torch.memory_format:
    """The tensor layout `name` (`auto`, `channels_last`, `contiguous`) asks for with this precision on `device`.

    `auto` is channels-last on the CPU and under bf16 on CUDA, contiguous for fp32 on CUDA. On the CPU oneDNN's
    channels-last convolutions made the demo's 32x48 DER++ + SER step 10 % faster (0.18 against 0.20 s, 2 threads,
    quiet machine) and left the 288x384 step as it was (47.3 against 48.4 s; benchmarks/RESULTS.md); on CUDA
    cuDNN's channels-last kernels pay off with bf16's tensor cores. The other two force a layout, e.g. to compare
    kernels on a new device; the numbers differ between layouts by float rounding only.
    """
    if name == "auto":
        fast = device.type == "cpu" or use_bf16(precision, device)
        return torch.channels_last if fast else torch.contiguous_format
    return torch.channels_last if name == "channels_last" else torch.contiguous_format


def fused_optimizer_option(params: Iterable[torch.Tensor]) -> dict[str, bool]:
    """`{"fused": True}` for `torch.optim.SGD` when every parameter is on CUDA (one kernel updates them all), else
    `{}`: the CPU keeps the default for-each implementation and its results."""
    params = list(params)
    return {"fused": True} if params and all(p.is_cuda for p in params) else {}


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context for this precision and device (a no-op context for fp32)."""
    if use_bf16(precision, device):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _say_waiting(n_gpus: int) -> None:
    from ser_cli.runtime.progress import stderr_console

    stderr_console.print(f"--device cuda:auto: all {n_gpus} GPU(s) are held by other ser processes; waiting for one",
                         markup=False, highlight=False)


def host_facts(device: torch.device) -> dict[str, object]:
    """What besides the seed decides a run's numbers: the device kind, torch's thread count and version.

    The same seed gives other results with another thread count (reductions split differently; on the demo one
    DER++ run ends at 14.8 % class-IL with 1 thread and 21.5 % with 2), so runs record it and `ser compare` warns
    when the runs it compares differ in it.
    """
    return {"device": device.type, "torch_threads": torch.get_num_threads(), "torch": str(torch.__version__)}
