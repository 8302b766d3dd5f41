"""The `ser` CLI contract for the foundation commands: exit codes, one-line errors, stdout vs stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ser_cli import __version__
from ser_cli.cli.app import app

runner = CliRunner()
SMALL = ["--set", "data.synth.height=24", "--set", "data.synth.width=36", "--set", "data.synth.n_classes=3",
         "--set", "data.synth.train_per_class=2", "--set", "data.synth.test_per_class=1"]


def _one_line_error(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_help_lists_commands_and_version() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "data" in result.stdout
    assert runner.invoke(app, ["--version"]).stdout.strip() == f"ser {__version__}"


def test_synth_then_info(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "s.h5"
    result = runner.invoke(app, ["--quiet", "data", "synth", "--out", str(out), *SMALL])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    info = runner.invoke(app, ["data", "info", str(out), "--json"])
    assert info.exit_code == 0, info.output
    details = json.loads(info.stdout)
    assert details["splits"]["train"]["images"] == 6 and details["n_classes"] == 3
    human = runner.invoke(app, ["data", "info", str(out)])
    assert "fingerprint" in human.stdout and details["fingerprint"] in human.stdout


def test_seed_option_changes_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name, seed in (("a", "0"), ("b", "0"), ("c", "3")):
        assert runner.invoke(app, ["-q", "data", "synth", "--out", f"{name}.h5", "--seed", seed, *SMALL]).exit_code == 0
    assert Path("a.h5").read_bytes() == Path("b.h5").read_bytes() != Path("c.h5").read_bytes()


def test_out_of_range_override_exits_2_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["data", "synth", "--set", "data.synth.n_classes=-1"])
    assert result.exit_code == 2
    assert _one_line_error(result) == "error: --set data.synth.n_classes: must be >= 2 (got -1)"
    assert not list(tmp_path.rglob("*.h5*"))  # nothing half-written


def test_unknown_key_in_params_file_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text("data:\n  synth:\n    n_clases: 4\n")
    result = runner.invoke(app, ["data", "synth"])
    assert result.exit_code == 2
    assert "params.yaml: data.synth.n_clases: unknown key; did you mean 'n_classes'?" in _one_line_error(result)


@pytest.mark.parametrize("content, fragment", [
    (b"not hdf5 at all", "not an HDF5 file"),
    (None, "file not found"),
])
def test_info_on_bad_files_exits_2(tmp_path: Path, content: bytes | None, fragment: str) -> None:
    path = tmp_path / "bad.h5"
    if content is not None:
        path.write_bytes(content)
    result = runner.invoke(app, ["data", "info", str(path)])
    assert result.exit_code == 2 and fragment in _one_line_error(result)


def test_unknown_option_is_a_usage_error() -> None:
    assert runner.invoke(app, ["data", "synth", "--bogus"]).exit_code == 2


def test_module_entry_point_runs() -> None:
    result = subprocess.run([sys.executable, "-m", "ser_cli", "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"ser {__version__}"
