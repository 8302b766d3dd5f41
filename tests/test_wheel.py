"""The wheel ships both top-level packages (`ser_cli` and the stage modules in `stages`) and its `ser` runs alone.

Builds the wheel from the checkout (`pip wheel --no-build-isolation`: hatchling is a dev dependency, no network),
installs it into an empty folder, and runs that folder's `ser --help` and `ser data synth --help` with only that
folder on the import path beside the installed dependencies, from a directory outside the checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_wheel_holds_ser_cli_and_stages_and_its_ser_runs(tmp_path: Path) -> None:
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(ROOT)],
                   check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("ser-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"stages/__init__.py", "stages/train.py", "ser_cli/cli/entry.py", "ser_cli/runs/run_io.py"} <= names
    assert not any(n.startswith(("tests/", "experiments/", "data/")) for n in names)
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-compile", "--target", str(site), str(wheel)], check=True,
                   capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import ser_cli, stages.train; print(ser_cli.__file__); "
                            "print(stages.train.__file__)"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           check=True)
    assert all(Path(line).is_relative_to(site) for line in where.stdout.split()), where.stdout
    for args, expected in ((["--help"], "pretrain-saliency"), (["data", "synth", "--help"], "--out")):
        result = subprocess.run([str(site / "bin" / "ser"), *args], cwd=tmp_path, env=env, capture_output=True,
                                text=True)
        assert result.returncode == 0 and expected in result.stdout, result.stderr
