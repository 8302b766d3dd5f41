"""Usage mistakes through the real entry point (`python -m ser_cli`): one line on stderr and exit 2, no banner."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _entry(args: list[str], capsys: pytest.CaptureFixture[str],
           monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    """The console-script entry point (`ser_cli.cli.app.main`) in this process: exit code, stdout, stderr."""
    from ser_cli.cli.app import main

    monkeypatch.setattr(sys, "argv", ["ser", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main()
    out, err = capsys.readouterr()
    return exited.value.code, out, err


@pytest.mark.parametrize(("args", "expected"), [
    (["train", "--bogus"], "error: ser train: No such option: --bogus"),
    (["train"], "error: ser train: Missing option '--data'."),
    (["train", "--data"], "error: ser: Option '--data' requires an argument."),
    (["compare"], "error: ser compare: Missing option '--out'"),
    (["evaluate", "--run"], "error: ser: Option '--run' requires an argument."),
    (["precompute", "--frobnicate"], "error: ser precompute: No such option: --frobnicate"),
    (["no-such-command"], "error: ser: No such command 'no-such-command'."),
])
def test_usage_errors_are_one_line(args: list[str], expected: str, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = _entry(args, capsys, monkeypatch)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith(expected), err
    assert out == ""


def test_help_and_version_still_exit_0(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for args in (["--help"], ["--version"], []):
        code, out, err = _entry(args, capsys, monkeypatch)
        assert code == 0 and out and not err, args
    # and once through a new interpreter, as the `ser` script runs it
    done = subprocess.run([sys.executable, "-m", "ser_cli", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("ser ") and not done.stderr


def _help(*args: str) -> str:
    from typer.testing import CliRunner

    from ser_cli.cli.app import app

    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_root_help_lists_commands_in_pipeline_order() -> None:
    listed = [line.split()[1] for line in _help().splitlines() if line.startswith("│ ") and len(line.split()) > 2]
    commands = [name for name in listed if not name.startswith("-")]
    assert commands == ["data", "pretrain-saliency", "precompute", "train", "evaluate", "compare", "sweep", "predict"]


def test_flags_show_no_value_placeholder_and_method_help_reads_the_registry() -> None:
    from ser_cli.continual.methods import method_names

    for command in (["train"], ["evaluate"], ["compare"], ["precompute"], ["pretrain-saliency"], [], ["data"],
                    ["data", "synth"], ["data", "import"], ["data", "info"], ["data", "spurious"], ["predict"],
                    ["sweep"]):
        assert "<bool>" not in _help(*command), command
    method_line = next(line for line in _help("train").splitlines() if "--method" in line)
    assert all(name in method_line for name in method_names())


def test_every_command_that_writes_a_data_file_prints_its_info_with_json(tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from ser_cli.cli.app import app

    tiny = ["--set", "data.synth.train_per_class=2", "--set", "data.synth.test_per_class=1", "--set",
            "data.synth.height=16", "--set", "data.synth.width=16"]
    runner = CliRunner()
    made = runner.invoke(app, ["-q", "data", "synth", "--out", str(tmp_path / "a.h5"), *tiny, "--json"])
    assert made.exit_code == 0, made.output
    info = json.loads(made.stdout)
    assert info["path"].endswith("a.h5") and info["splits"]["train"]["images"] == 40
    copied = runner.invoke(app, ["-q", "data", "spurious", str(tmp_path / "a.h5"), "--out", str(tmp_path / "b.h5"),
                                 "--json"])
    assert copied.exit_code == 0, copied.output
    assert json.loads(copied.stdout)["fingerprint"] != info["fingerprint"]
    plain = runner.invoke(app, ["-q", "data", "synth", "--out", str(tmp_path / "c.h5"), *tiny])
    assert plain.stdout.strip() == str(tmp_path / "c.h5")
