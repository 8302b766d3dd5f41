"""Which code and which machine made an output: recorded in every run, evaluation, comparison and grid snapshot.

Besides the seed and the inputs (hashed elsewhere), a result depends on the code version, the torch version and
thread count (`runtime.device.host_facts`) and the CPU's instruction set (on an AVX-512 host the same seed gives
another demo table than on an AVX2 one). `code_version` finds the code version, in this order:

1. the git repository the package was imported from: the commit, and `dirty` when tracked code files (`ser_cli/`,
   `stages/`, `experiments/`, `pyproject.toml`) differ from it;
2. a frozen export of the repository (what experiment grids run from): the commit written into `SER_COMMIT` at the
   export's root by `experiments.freeze`;
3. neither (an installed wheel): the package version alone.

`executor_info` says which job system ran the command: `ser sweep --executor local|slurm` sets `SER_EXECUTOR` and
`SER_JOB_ID` (submitit's job id) in its jobs' environment; a command run by hand (or by DVC) is `direct`.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import ser_cli

ROOT = Path(ser_cli.__file__).resolve().parent.parent
EXPORT_MARK = "SER_COMMIT"
CODE_PATHS = ("ser_cli", "stages", "experiments", "pyproject.toml")


@functools.cache
def code_version() -> dict[str, Any]:
    """{"commit", "dirty", "source": git | export | package, "version"} of the code running now."""
    version = ser_cli.__version__
    commit = _git("rev-parse", "HEAD")
    if commit:
        changed = _git("status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS)
        return {"commit": commit, "dirty": bool(changed), "source": "git", "version": version}
    mark = ROOT / EXPORT_MARK
    if mark.is_file():
        return {"commit": mark.read_text().strip(), "dirty": False, "source": "export", "version": version}
    return {"commit": None, "dirty": None, "source": "package", "version": version}


def executor_info() -> dict[str, Any]:
    """{"executor": local | slurm | direct, "job_id": submitit's job id or None} of the job running this command."""
    return {"executor": os.environ.get("SER_EXECUTOR") or "direct", "job_id": os.environ.get("SER_JOB_ID") or None}


def code_label(code: dict[str, Any] | None) -> str:
    """`1a2b3c4`, `1a2b3c4+dirty`, `0.1.0` (package only) or `unknown` (an output made before it was recorded)."""
    if not code:
        return "unknown"
    if not code.get("commit"):
        return str(code.get("version") or "unknown")
    return str(code["commit"])[:7] + ("+dirty" if code.get("dirty") else "")


@functools.cache
def machine_facts() -> dict[str, str]:
    """The CPU model and the SIMD level torch dispatches to (`AVX512`, `AVX2`, ...), and the OS."""
    import torch

    return {"cpu": _cpu_model(), "isa": str(torch.backends.cpu.get_cpu_capability()), "platform": platform.platform()}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*args: str) -> str:
    """Output of `git args` in the package's repository, '' when it is not one (or git is missing)."""
    if not (ROOT / ".git").exists():
        return ""
    try:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""
