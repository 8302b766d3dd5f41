"""Typed configuration: params.yaml validates, overrides merge before validation, errors are one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from ser_cli.config import Params, TrainConfig
from ser_cli.config_loader import load_params
from ser_cli.runtime.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def test_repository_params_yaml_validates() -> None:
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params)


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_params() == Params()


def test_override_is_parsed_as_yaml_and_merged() -> None:
    p = load_params(None, ["train.buffer_size=500", "train.mnp_blocks=[1,0,1,0,1]", "evaluate.epsilons=['2/255']"])
    assert p.train.buffer_size == 500
    assert p.train.mnp_blocks == [1, 0, 1, 0, 1]
    assert p.evaluate.epsilons == [pytest.approx(2 / 255)]


def test_file_error_names_file_key_bound_and_value(tmp_path: Path) -> None:
    f = tmp_path / "params.yaml"
    f.write_text("train:\n  buffer_size: -5\n")
    with pytest.raises(UserError) as err:
        load_params(f)
    assert str(err.value) == f"{f}: train.buffer_size: must be >= 0 (got -5)"


def test_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("train:\n  bufer_size: 3\n")
    with pytest.raises(UserError, match=r"train.bufer_size: unknown key; did you mean 'buffer_size'\?"):
        load_params(f)


def test_override_errors_name_the_override() -> None:
    with pytest.raises(UserError, match=r"^--set data.synth.n_classes: must be >= 2 \(got -1\)$"):
        load_params(None, ["data.synth.n_classes=-1"])
    with pytest.raises(UserError, match="expected section.key=value"):
        load_params(None, ["buffer_size"])


@pytest.mark.parametrize("override, fragment", [
    ("train.precision=fp16", "must be one of"),
    ("train.mnp_blocks=[1,0]", "five 0/1 flags"),
    ("evaluate.epsilons=[2]", "must be <= 1"),
    ("evaluate.epsilons=['x/255']", "not a number or fraction"),
    ("train.minibatch_size=64", "smaller than minibatch_size"),
    ("data.synth.fixation_on_object=0.9", "must be <= 1"),
])
def test_invalid_values_are_rejected(override: str, fragment: str) -> None:
    with pytest.raises(UserError, match=fragment):
        load_params(None, [override, "train.buffer_size=10"] if "minibatch" in override else [override])


def test_method_alias_switches_ser_on() -> None:
    cfg = TrainConfig(method="er_ace_ser")
    assert (cfg.method, cfg.ser) == ("er_ace", True)


def test_not_yaml_and_not_a_mapping(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_params(bad)
    bad.write_text("- a list\n")
    with pytest.raises(UserError, match="must be a mapping"):
        load_params(bad)


def test_paper_preset_validates_and_states_the_paper_setting() -> None:
    p = load_params(REPO / "params-paper.yaml")
    assert (p.data.height, p.data.width) == (288, 384)
    assert (p.train.backbone, p.train.n_tasks, p.train.classes_per_task) == ("resnet18", 20, 5)
    assert (p.train.batch_size, p.train.minibatch_size, p.train.buffer_size, p.train.lr) == (8, 8, 2000, 0.01)
    assert (p.saliency.backbone, p.train.sal_lr) == ("resnet18", 0.005)


def _float_fields() -> list[str]:
    from ser_cli.config import Params

    keys = []
    for section_name, section in Params.model_fields.items():
        model = section.annotation
        for name, field in getattr(model, "model_fields", {}).items():
            if field.annotation is float or field.annotation == (float | None):
                keys.append(f"{section_name}.{name}")
            sub = getattr(field.annotation, "model_fields", None)
            for sub_name, sub_field in (sub or {}).items():
                if sub_field.annotation is float:
                    keys.append(f"{section_name}.{name}.{sub_name}")
    return keys


def test_every_float_field_refuses_non_finite_values() -> None:
    from ser_cli.config_loader import load_params
    from ser_cli.runtime.errors import UserError

    keys = _float_fields()
    assert {"train.lr", "saliency.lr", "data.synth.blur_sigma"} <= set(keys)
    for key in keys:
        for bad in ("inf", "-inf", ".nan"):
            with pytest.raises(UserError, match=rf"--set {key}: Input should be a finite number"):
                load_params(None, [f"{key}={bad}"])
