"""A method's own hyperparameters (`MethodKnobs` sections in `continual.settings`): flat `train.NAME` keys declared
once, registered under the method that reads them, hashed only for it, with the one-line errors of every key."""

from __future__ import annotations

import inspect
import re

import pytest

from ser_cli.config import TrainConfig
from ser_cli.config_loader import load_params
from ser_cli.continual.methods import method_class, method_names
from ser_cli.continual.settings import (
    METHOD_KNOBS,
    CopeKnobs,
    DerKnobs,
    DerppKnobs,
    TrainFields,
    TrainSettings,
    method_knob_owners,
)
from ser_cli.runs.run_io import HASHED_FOR_EVERY_METHOD, METHOD_SETTINGS, config_hash
from ser_cli.runtime.errors import UserError
from ser_cli.runtime.section import Section

KNOBS = ("alpha", "beta", "cope_dim", "cope_temperature", "cope_momentum", "cope_iterations")


@pytest.mark.parametrize(("method", "expected"), [
    ("derpp", "a51b4b113de43a05"),  # computed by the code before methods had knob sections
    ("cope", "a8a9c06bfeb3dc75"),
    ("der", "d627b2bbd95f53d5"),
    ("er", "6702eb2d92dc17ed"),
    ("er_ace", "893b9a8323fbbcbc"),
    ("sgd", "ba4cac876f022fbf"),
    ("joint", "9832d7a4f1e6593d"),
])
def test_config_hash_of_each_default_method_is_pinned(method: str, expected: str) -> None:
    assert config_hash(TrainSettings(method=method)) == expected
    assert config_hash(TrainConfig(method=method).settings()) == expected


def test_knob_sections_are_registered_under_the_methods_that_read_them() -> None:
    assert METHOD_KNOBS == {"der": DerKnobs, "derpp": DerppKnobs, "cope": CopeKnobs}
    assert set(METHOD_KNOBS) <= set(method_names())
    assert issubclass(DerppKnobs, DerKnobs) and "alpha" not in vars(DerppKnobs).get("__annotations__", {})
    assert method_knob_owners() == {"alpha": ("der", "derpp"), "beta": ("derpp",), "cope_dim": ("cope",),
                                    "cope_temperature": ("cope",), "cope_momentum": ("cope",),
                                    "cope_iterations": ("cope",)}


@pytest.mark.parametrize("method", ["der", "derpp", "cope", "er", "er_ace", "sgd", "joint"])
def test_a_method_reads_only_the_knobs_registered_for_it(method: str) -> None:
    source = inspect.getsource(inspect.getmodule(method_class(method)))
    read = {k for k in KNOBS if re.search(rf"\.{k}\b", source)}
    own = set(METHOD_KNOBS[method].model_fields) if method in METHOD_KNOBS else set()
    assert read == own


def test_knobs_are_flat_train_keys_with_their_sections_declarations() -> None:
    for model in (TrainFields, TrainSettings, TrainConfig):
        for section in METHOD_KNOBS.values():
            for name, field in section.model_fields.items():
                mine = model.model_fields[name]
                assert (mine.default, mine.description, mine.metadata) == (field.default, field.description,
                                                                           field.metadata)
    settings = TrainSettings.from_mapping({"method": "cope", "alpha": 0.2, "cope_dim": 64, "dropped_key": 1})
    assert (settings.alpha, settings.cope_dim, settings.to_dict()["cope_dim"]) == (0.2, 64, 64)
    assert load_params(None, ["train.beta=0.25"]).train.settings().beta == 0.25


def test_each_train_key_is_declared_once() -> None:
    # a knob named like another key would silently hide one of the two declarations and its bounds
    declared = [name for cls in TrainFields.__mro__ if issubclass(cls, Section)
                for name in vars(cls).get("__annotations__", {})]
    assert len(declared) == len(set(declared)) == len(TrainFields.model_fields)


def test_a_knob_counts_in_the_hash_only_of_its_methods() -> None:
    assert METHOD_SETTINGS == {k: ("cope",) for k in KNOBS[2:]}
    assert HASHED_FOR_EVERY_METHOD == ("alpha", "beta")  # as before knob sections existed: every run keeps its hash
    assert config_hash(TrainSettings(method="er", alpha=0.3)) != config_hash(TrainSettings(method="er"))
    assert config_hash(TrainSettings(method="derpp", cope_iterations=2)) == config_hash(TrainSettings(method="derpp"))
    assert config_hash(TrainSettings(method="cope", cope_iterations=2)) != config_hash(TrainSettings(method="cope"))


@pytest.mark.parametrize(("values", "message"), [
    ({"alpha": -1}, "train.alpha: must be >= 0.0 (got -1)"),
    ({"beta": -0.5}, "train.beta: must be >= 0.0 (got -0.5)"),
    ({"cope_momentum": 1.0}, "train.cope_momentum: must be < 1.0 (got 1.0)"),
    ({"cope_iterations": 0}, "train.cope_iterations: must be >= 1 (got 0)"),
    ({"alph": 1}, "train.alph: unknown key"),
])
def test_a_bad_knob_is_a_one_line_error_naming_its_key(values: dict[str, object], message: str) -> None:
    with pytest.raises(UserError) as err:
        TrainSettings(**values)
    assert str(err.value) == message


@pytest.mark.parametrize(("override", "message"), [
    ("train.cope_dim=0", "--set train.cope_dim: must be >= 1 (got 0)"),
    ("train.cope_temperature=0", "--set train.cope_temperature: must be > 0.0 (got 0)"),
    ("train.alph=1", "--set train.alph: unknown key; did you mean 'alpha'?"),
])
def test_a_bad_knob_override_is_a_one_line_error_naming_its_key(override: str, message: str) -> None:
    with pytest.raises(UserError) as err:
        load_params(None, [override])
    assert str(err.value) == message
