"""Usage mistakes through the real entry point (`python -m ser_cli`): one line on stderr and exit 2, no banner."""

from __future__ import annotations

import os
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
    assert commands == ["data", "pretrain-saliency", "precompute", "train", "evaluate", "compare", "sweep", "predict",
                        "params"]


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


COMMANDS = (["train"], ["evaluate"], ["compare"], ["precompute"], ["pretrain-saliency"], [], ["data"],
            ["data", "synth"], ["data", "import"], ["data", "info"], ["data", "spurious"], ["predict"], ["sweep"],
            ["params"])


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_h_is_help_and_no_python_type_is_shown(command: list[str]) -> None:
    from typer.testing import CliRunner

    from ser_cli.cli.app import app

    short = CliRunner().invoke(app, [*command, "-h"], env={"COLUMNS": "200"})
    assert short.exit_code == 0 and short.output == _help(*command)
    for python_type in ("list[", "<str>", "Path]", "<bool>", "int range"):
        assert python_type not in short.output, (command, python_type)


@pytest.mark.parametrize(("args", "expected"), [
    (["train", "--bogus"], "error: ser train: No such option: --bogus (see ser train --help)"),  # not '--out'
    (["train", "--dta", "x"], "error: ser train: No such option: --dta. Did you mean --data? (see ser train --help)"),
    (["evaluate", "--mapz"], "error: ser evaluate: No such option: --mapz. Did you mean --maps? (see ser evaluate "
                             "--help)"),
])
def test_only_close_options_are_suggested(args: list[str], expected: str, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = _entry(args, capsys, monkeypatch)
    assert (code, err.strip()) == (2, expected)


def test_shell_completion_is_on(tmp_path) -> None:
    from typer.testing import CliRunner

    from ser_cli.cli.app import app

    assert "--install-completion" in _help() and "--show-completion" in _help()
    script = CliRunner().invoke(app, ["--show-completion", "bash"], prog_name="ser")
    assert script.exit_code == 0 and "_SER_COMPLETE=complete_bash" in script.output
    env = {"_SER_COMPLETE": "complete_bash", "COMP_WORDS": "ser train --sal", "COMP_CWORD": "2"}
    done = subprocess.run([sys.executable, "-m", "ser_cli"], capture_output=True, text=True,
                          env={**os.environ, **env})
    assert done.returncode == 0 and done.stdout.split() == ["--saliency-model"], done


def test_spurious_takes_params_and_set_like_every_command(tmp_path) -> None:
    from typer.testing import CliRunner

    from ser_cli.cli.app import app

    assert "--params" in _help("data", "spurious") and "--set" in _help("data", "spurious")
    tiny = ["--set", "data.synth.train_per_class=2", "--set", "data.synth.test_per_class=1", "--set",
            "data.synth.n_classes=2", "--set", "data.synth.height=16", "--set", "data.synth.width=16"]
    runner = CliRunner()
    assert runner.invoke(app, ["-q", "data", "synth", "--out", str(tmp_path / "a.h5"), *tiny]).exit_code == 0
    bad = runner.invoke(app, ["-q", "data", "spurious", str(tmp_path / "a.h5"), "--out", str(tmp_path / "b.h5"),
                              "--set", "data.synth.colour=red"])
    assert bad.exit_code == 2 and "data.synth.colour: unknown key" in bad.stderr and not (tmp_path / "b.h5").exists()
    good = runner.invoke(app, ["-q", "data", "spurious", str(tmp_path / "a.h5"), "--out", str(tmp_path / "b.h5"),
                               "--params", str(tmp_path / "none.yaml")])
    assert good.exit_code == 2 and "none.yaml" in good.stderr  # --params is read too
    assert runner.invoke(app, ["-q", "data", "spurious", str(tmp_path / "a.h5"), "--out",
                               str(tmp_path / "b.h5")]).exit_code == 0


def test_evaluate_help_names_every_figure() -> None:
    text = " ".join(_help("evaluate").split())
    for figure in ("accuracy_matrix.png", "avg_accuracy.png", "robustness.png", "saliency_overlay.png",
                   "gradcam.png"):
        assert figure in text


def test_the_cli_starts_without_torch() -> None:
    """`ser --help`, `ser data synth` and `ser data info` never need torch (2-3 s of every start-up otherwise): the
    command modules import it only where a command runs."""
    import subprocess
    import sys

    code = "import sys, ser_cli.cli.app; print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
