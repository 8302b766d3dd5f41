"""How options and `--set` reach the validated params: values given as options are validated like any `--set`
(never copied in unchecked) and are taken as values (never parsed as YAML); settings are discoverable from the CLI
(`--help` lists a command's most used keys, `ser params` prints the resolved configuration, an option that is really
a setting is answered with the `--set` to write)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ser_cli.cli.app import app

runner = CliRunner()


class _Called(Exception):
    """Raised by a stub stage: the command got as far as running its stage, with these settings."""

    def __init__(self, cfg: Any) -> None:
        super().__init__("stage reached")
        self.cfg = cfg


def _stub_stage(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    """Replace `ser_cli.stages.<module>.run` by a stub that raises `_Called(cfg)`, so no test trains anything."""
    import importlib

    stage = importlib.import_module(f"ser_cli.stages.{module}")
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
