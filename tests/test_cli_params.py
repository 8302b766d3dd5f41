"""How options and `--set` reach the validated params: values given as options are validated like any `--set`
(never copied in unchecked) and are taken as values (never parsed as YAML); settings are discoverable from the CLI
(`--help` lists a command's most used keys, `ser params` prints the resolved configuration, an option that is really
a setting is answered with the `--set` to write)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ser_cli.cli.app import app
from ser_cli.cli.settings_view import COMMAND_SECTIONS, EXAMPLE, MOST_USED
from ser_cli.config import Params
from ser_cli.config_loader import load_params

runner = CliRunner()


class _Called(Exception):
    """Raised by a stub stage: the command got as far as running its stage, with these settings."""

    def __init__(self, cfg: Any) -> None:
        super().__init__("stage reached")
        self.cfg = cfg


def _stub_stage(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    """Replace `stages.<module>.run` by a stub that raises `_Called(cfg)`, so no test trains anything."""
    import importlib

    stage = importlib.import_module(f"stages.{module}")
    monkeypatch.setattr(stage, "run", lambda cfg, *args, **kwargs: (_ for _ in ()).throw(_Called(cfg)))


def _config_reaching(monkeypatch: pytest.MonkeyPatch, module: str, args: list[str]) -> Any:
    _stub_stage(monkeypatch, module)
    result = runner.invoke(app, ["-q", *args])
    assert isinstance(result.exception, _Called), result.output
    return result.exception.cfg


# --- issue 31 item 4 (a): --init-from is validated with the section ------------------------------------------------

def test_init_from_together_with_backbone_weights_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    """Before the fix `--init-from` was copied in after validation: both starts were accepted and the second load
    silently overwrote the first."""
    _stub_stage(monkeypatch, "pretrain_saliency")
    result = runner.invoke(app, ["-q", "pretrain-saliency", "--data", str(tmp_path / "d.h5"), "--out",
                                 str(tmp_path / "o"), "--init-from", str(tmp_path / "cls.pt"),
                                 "--set", f"saliency.backbone_weights={tmp_path / 'tv.pth'}"])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and not isinstance(result.exception, _Called), result.output
    assert len(lines) == 1 and lines[0].startswith("error: --init-from"), lines
    assert "saliency.init_from and saliency.backbone_weights both set" in lines[0]


def test_init_from_alone_reaches_the_stage_as_given(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = _config_reaching(monkeypatch, "pretrain_saliency", [
        "pretrain-saliency", "--data", "d.h5", "--init-from", "#weights/a: b.pt"])
    assert cfg.init_from == "#weights/a: b.pt" and cfg.backbone_weights is None


# --- issue 31 item 4 (b): --saliency-model is a value, never YAML ---------------------------------------------------

@pytest.mark.parametrize("path", ["#x/model.pt", "null", "runs/a: b/model.pt", "[1, 2]", "~", "true", "1e3"])
def test_saliency_model_path_reaches_the_stage_unparsed(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the fix the path went through YAML: '#x/model.pt' and 'null' became None, 'runs/a: b/model.pt' a dict."""
    cfg = _config_reaching(monkeypatch, "train", ["train", "--data", "d.h5", "--out", "r",
                                                  "--saliency-model", path])
    assert cfg.train.saliency_checkpoint == path


def test_other_options_are_values_too(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _config_reaching(monkeypatch, "train", ["train", "--data", "d.h5", "--out", "r", "--method", "derpp",
                                                  "--ser", "--seed", "7", "--set", "train.seed=3"])
    assert (cfg.train.method, cfg.train.ser, cfg.train.seed) == ("derpp", True, 7)  # the option wins over --set


def test_a_bad_option_value_is_named_by_its_option(monkeypatch: pytest.MonkeyPatch) -> None:
    _stub_stage(monkeypatch, "train")
    result = runner.invoke(app, ["-q", "train", "--data", "d.h5", "--out", "r", "--seed", "-1"])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0] == "error: --seed: train.seed: must be >= 0 (got -1)", lines


# --- issue 32 item 1: discoverable settings ------------------------------------------------------------------------

def _help(*args: str) -> str:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", list(COMMAND_SECTIONS))
def test_help_ends_with_the_most_used_settings_their_defaults_and_a_set_example(
        command: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    text = _help(*command.split())
    (section,) = COMMAND_SECTIONS[command]
    panel = text[text.index("Settings: params.yaml section " + section):]
    assert text.rindex("╭") == text.index("╭─ Settings:") and text.rstrip().endswith("╯")  # the last panel
    assert f"--set {EXAMPLE[section]}" in panel and f"ser params {section}" in panel
    monkeypatch.chdir(tmp_path)  # built-in defaults, not the repository's params.yaml
    for key in MOST_USED[section]:
        shown = next(line for line in panel.splitlines() if f"--set {section}.{key}=" in line)
        setting = shown.split("--set ", 1)[1].split()[0]
        # the value shown is the default: setting it changes nothing
        assert load_params(None, [setting]) == Params(), setting


def test_train_help_lists_the_keys_a_mammoth_user_looks_for() -> None:
    text = _help("train")
    for shown in ("--set train.buffer_size=2000", "--set train.lr=0.01", "--set train.alpha=0.1",
                  "--set train.method=derpp"):
        assert shown in text


def _params_output(args: list[str]) -> str:
    result = runner.invoke(app, ["params", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_ser_params_prints_the_resolved_configuration_as_a_valid_params_file(tmp_path: Path) -> None:
    own = tmp_path / "own.yaml"
    own.write_text("train:\n  lr: 0.05\nevaluate:\n  epsilons: ['2/255']\n")
    sets = ["--set", "train.buffer_size=123", "--set", "data.synth.object_scale=[0.2, 0.3]"]
    expected = load_params(own, ["train.buffer_size=123", "data.synth.object_scale=[0.2, 0.3]"])
    text = _params_output(["--params", str(own), *sets])
    assert yaml.safe_load(text) == expected.model_dump(mode="json")
    printed = tmp_path / "printed.yaml"
    printed.write_text(text)
    assert load_params(printed) == expected  # it reads back as the same configuration
    assert "# Replay buffer capacity in images.\n  buffer_size: 123\n" in text
    assert "  # SynthSal, the built-in benchmark (`ser data synth`).\n  synth:\n" in text


@pytest.mark.parametrize(("path", "expected"), [
    ("train", lambda p: {"train": p.train.model_dump(mode="json")}),
    ("data.synth", lambda p: {"data": {"synth": p.data.synth.model_dump(mode="json")}}),
    ("train.lr", lambda p: {"train": {"lr": p.train.lr}}),
])
def test_ser_params_prints_one_section_or_key(path: str, expected: Any, monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert yaml.safe_load(_params_output([path])) == expected(Params())


def test_ser_params_names_an_unknown_section() -> None:
    result = runner.invoke(app, ["params", "trian"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: ser params: unknown section or key 'trian'; did you mean 'train'?"


def _entry(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """The console-script entry point in this process: exit code and the stderr lines."""
    import sys

    from ser_cli.cli.app import main

    monkeypatch.setattr(sys, "argv", ["ser", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main()
    return exited.value.code, capsys.readouterr().err.strip()


@pytest.mark.parametrize(("args", "expected"), [
    (["train", "--buffer-size", "200"], "error: ser train: No such option: --buffer-size; it is a setting: "
                                        "--set train.buffer_size=200 (see ser train --help)"),
    (["train", "--buffer_size=5"], "error: ser train: No such option: --buffer_size; it is a setting: "
                                   "--set train.buffer_size=5 (see ser train --help)"),
    (["train", "--lr"], "error: ser train: No such option: --lr; it is a setting: --set train.lr=VALUE "
                        "(see ser train --help)"),
    (["pretrain-saliency", "--epochs", "3"], "error: ser pretrain-saliency: No such option: --epochs; it is a "
                                             "setting: --set saliency.epochs=3 (see ser pretrain-saliency --help)"),
    (["data", "synth", "--n-classes", "4"], "error: ser data synth: No such option: --n-classes; it is a setting: "
                                            "--set data.synth.n_classes=4 (see ser data synth --help)"),
    (["evaluate", "--buffer-size", "3"], "error: ser evaluate: No such option: --buffer-size (see ser evaluate "
                                         "--help)"),  # not a key of the sections evaluate reads
    (["train", "--data", "d.h5", "--out", "r", "--set", "train.buffer_size", "5"],
     "error: ser train: --set train.buffer_size: missing '=' between key and value (write --set "
     "train.buffer_size=5) (see ser train --help)"),
])
def test_an_option_that_is_a_setting_gets_the_set_to_write(args: list[str], expected: str,
                                                           capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    code, err = _entry(args, capsys, monkeypatch)
    assert (code, err) == (2, expected)


def test_a_last_set_without_equals_says_so() -> None:
    result = runner.invoke(app, ["-q", "data", "synth", "--out", "x.h5", "--set", "data.synth.height"])
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: --set data.synth.height: missing '=' between key and value (write "
                                     "--set data.synth.height=VALUE)")
