"""Memory a device can still give: checked before large allocations so a run fails at once with one line."""

from __future__ import annotations

import os

import torch


def available_bytes(device: torch.device | str) -> int | None:
    """Free memory of `device`: CUDA's free memory, or the host's MemAvailable (Linux); None when unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def gigabytes(n: int) -> str:
    return f"{n / 1e9:.1f} GB"
