"""Load `params.yaml`, merge `--set section.key=value` overrides, validate, and explain errors in one line.

Values given with `--set` are parsed as YAML (`0.02` is a float, `true` a bool, `[1,0,1,1,1]` a list), merged into
the file's dict and then validated with the file, so an override gets exactly the checks a file entry gets. An
error names where the bad value came from: `params.yaml: train.buffer_size: must be >= 0 (got -5)` or
`--set train.buffer_size: ...`.

A command's own options that set a key (`ser train --saliency-model PATH`, `--seed N`) are passed as *values*, never
as YAML text (a path like `#x/model.pt` or `null` must stay a path), and are validated in the same pass, their
errors named by the option: `--seed: train.seed: must be >= 0 (got -1)`.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ser_cli.config import Params
from ser_cli.runtime.errors import UserError
from ser_cli.runtime.section import error_message
from ser_cli.runtime.yaml_files import load_yaml_file, safe_yaml

DEFAULT_PARAMS = Path("params.yaml")


# dotted key -> (the option that gave it, its value), e.g. {"train.seed": ("--seed", 7)}
OptionValues = dict[str, tuple[str, Any]]


def load_params(path: Path | None = None, overrides: list[str] | None = None,
                options: OptionValues | None = None) -> Params:
    """Read `path` (default `./params.yaml` when present, else built-in defaults), apply the `--set` overrides, then
    the command's option values (they win), and validate all of it once."""
    if path is None and DEFAULT_PARAMS.is_file():
        path = DEFAULT_PARAMS
    raw = _read_yaml(path) if path is not None else {}
    sources: dict[str, str] = {}
    for item in overrides or []:
        key, value = _parse_override(item)
        _set_dotted(raw, key, value)
        sources[key] = "--set"
    for key, (option, value) in (options or {}).items():
        _set_dotted(raw, key, value)
        sources[key] = option
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise UserError(_explain(err, str(path) if path else "defaults", sources)) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    data = load_yaml_file(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: must be a mapping of sections (data, saliency, precompute, train, evaluate)")
    return data


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    if not sep and "." in key and " " not in key.strip():
        raise UserError(f"--set {key.strip()}: missing '=' between key and value (write --set {key.strip()}=VALUE)")
    if not sep or not key.strip() or "." not in key:
        raise UserError(f"--set {item!r}: expected section.key=value, e.g. --set train.buffer_size=500")
    try:
        value = safe_yaml(text, f"--set {key.strip()}") if text.strip() else None
    except UserError as err:
        if "not valid YAML" not in str(err):  # a bounded document is refused; plain text stays a string
            raise
        value = text
    return key.strip(), value


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[leaf] = value


def _explain(err: ValidationError, source: str, sources: dict[str, str]) -> str:
    """One line: `SOURCE: dotted.key: message (got value)`, several errors joined by '; '. SOURCE is the option that
    set the key (an option before `--set`: it was applied last), `--set KEY`, or the params file."""
    parts = []
    for item in err.errors(include_url=False):
        key = ".".join(str(p) for p in item["loc"])
        given = sorted((src != "--set", src) for o, src in sources.items()
                       if key == o or key.startswith(o + ".") or o.startswith(key + "."))
        if given and given[-1][0]:
            parts.append(f"{given[-1][1]}: {key}: {_message(item)}")
        elif given:
            parts.append(f"--set {key}: {_message(item)}")
        else:
            parts.append(f"{source}: {key}: {_message(item)}")
    return "; ".join(parts)


def _message(item: dict[str, Any]) -> str:
    if item["type"] == "extra_forbidden":
        return "unknown key" + _suggestion(item["loc"])
    return error_message(item)


def _suggestion(loc: tuple[Any, ...]) -> str:
    """'; did you mean X?' or the list of known keys, found by walking the model along `loc`."""
    model: type[BaseModel] = Params
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return ""
        model = field.annotation
    known = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    return f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(known)}"


def params_to_yaml(params: Params) -> str:
    """The resolved configuration as YAML, written next to every stage's outputs for provenance."""
    return yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False)
