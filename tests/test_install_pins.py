"""The set-up never swaps a torch the user installed: a CPU-only build put into .venv before `make` (README, Quick
start) satisfies both the Makefile's pins and pyproject's ranges, so pip keeps it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _makefile_pins() -> list[Requirement]:
    """Every `torch==X` / `torchvision==X` the Makefile installs (both architectures)."""
    text = (ROOT / "Makefile").read_text()
    line = next(row for row in text.splitlines() if row.startswith("TORCH "))
    return [Requirement(word) for word in re.findall(r"torch(?:vision)?==[0-9.]+", line)]


def test_a_cpu_build_satisfies_the_makefile_pins_and_pyproject_ranges() -> None:
    pins = _makefile_pins()
    assert {p.name for p in pins} == {"torch", "torchvision"} and len(pins) == 4
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    ranges = {r.name: r.specifier for r in map(Requirement, deps) if r.name in ("torch", "torchvision")}
    for pin in pins:
        (version,) = (s.version for s in pin.specifier)
        for build in (version, f"{version}+cpu"):  # the CUDA wheel from PyPI, the CPU one from PyTorch's index
            assert pin.specifier.contains(build) and ranges[pin.name].contains(build), (pin, build)
