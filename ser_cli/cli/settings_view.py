"""Settings as the CLI shows them: the most used keys at the end of a command's `--help`, the commented YAML that
`ser params` prints, and the answers to an option that is really a setting (`--buffer-size`) or a `--set` without `=`.

Hyperparameters live in `params.yaml` sections, not in options (DVC tracks them there); a user coming from Mammoth
looks for `--lr` and `--buffer_size` in `--help`, so every place where they would look points to `--set`.
"""

from __future__ import annotations

import difflib
import textwrap
from collections.abc import Sequence
from typing import Any

import yaml
from pydantic import BaseModel

from ser_cli.config import Params

# `ser <command>` -> the params sections it reads (dotted)
COMMAND_SECTIONS: dict[str, tuple[str, ...]] = {
    "data synth": ("data.synth",),
    "data import": ("data",),
    "pretrain-saliency": ("saliency",),
    "precompute": ("precompute",),
    "train": ("train",),
    "evaluate": ("evaluate",),
}
# section -> the keys `--help` lists (the rest: `ser params SECTION`)
MOST_USED: dict[str, tuple[str, ...]] = {
    "data.synth": ("n_classes", "train_per_class", "test_per_class", "height", "width", "n_distractors"),
    "data": ("height", "width", "storage", "workers"),
    "saliency": ("backbone", "epochs", "batch_size", "lr", "lr_decay", "n_gaussians", "precision"),
    "precompute": ("batch_size", "compression", "workers", "precision"),
    "train": ("method", "ser", "n_tasks", "classes_per_task", "buffer_size", "lr", "batch_size", "minibatch_size",
              "alpha", "beta", "sal_lr", "backbone", "precision"),
    "evaluate": ("epsilons", "attacks", "pgd_steps", "attack_images", "batch_size", "class_il_logits"),
}
# for keys whose field has no description
FALLBACK_DOC = {"n_tasks": "Tasks of the class-incremental stream", "classes_per_task": "New classes per task",
                "pgd_steps": "PGD iterations per attack", "attacks": "Attacks to run (pgd, fgsm)",
                "batch_size": "Images per batch"}
# the `--set` example under each section's list
EXAMPLE: dict[str, str] = {
    "data.synth": "data.synth.n_classes=10", "data": "data.height=144", "saliency": "saliency.epochs=10",
    "precompute": "precompute.batch_size=64", "train": "train.buffer_size=200",
    "evaluate": "evaluate.epsilons=[1/255,8/255]",
}


def command_key(ctx: Any) -> str:
    """The command words below `ser` of a click Context ('data synth'), as COMMAND_SECTIONS keys them."""
    names = []
    while ctx is not None:
        names.append(ctx.info_name)
        ctx = ctx.parent
    return " ".join(reversed(names[:-1]))


def section_model(path: str) -> type[BaseModel]:
    """The model of a dotted section ('data.synth' -> SynthConfig)."""
    model: type[BaseModel] = Params
    for part in path.split("."):
        model = model.model_fields[part].annotation  # type: ignore[assignment]
    return model


def inline(value: Any) -> str:
    """A value as one line of YAML (`[1, 2]`, `null`, `'2/255'`), so that it can be pasted after `--set KEY=`."""
    value = list(value) if isinstance(value, tuple) else value
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6)
    return text.removesuffix("\n...\n").strip()


def _one_word(value: Any) -> str:
    """`inline` without spaces between list items, so that the shell passes `--set k=[1,2]` as one word."""
    if isinstance(value, list | tuple):
        return "[" + ",".join(_one_word(item) for item in value) + "]"
    return inline(value)


def help_rows(section: str) -> list[tuple[str, str]]:
    """(`--set section.key=DEFAULT`, first sentence of its description) for the section's most used keys."""
    fields = section_model(section).model_fields
    rows = []
    for key in MOST_USED[section]:
        field = fields[key]
        doc = (field.description or FALLBACK_DOC.get(key, "")).split(". ")[0].rstrip(".")
        rows.append((f"--set {section}.{key}={_one_word(field.default)}", doc))
    return rows


def commented_yaml(params: Params, path: str | None = None) -> str:
    """`params` (or the section / key at dotted `path`) as YAML with each description as a comment above its key,
    nested under its section names so that the output is a valid params file."""
    parts = path.split(".") if path else []
    model: BaseModel = params
    for part in parts[:-1]:
        model = getattr(model, part)
    lines: list[str] = []
    if parts:
        for depth, name in enumerate(parts[:-1]):
            lines.append(f"{'  ' * depth}{name}:")
        _field_lines(model, parts[-1], len(parts) - 1, lines)
    else:
        for name in type(model).model_fields:
            _field_lines(model, name, 0, lines)
    return "\n".join(lines) + "\n"


def _field_lines(model: BaseModel, name: str, depth: int, lines: list[str]) -> None:
    indent = "  " * depth
    value, field = getattr(model, name), type(model).model_fields[name]
    doc = type(value).__doc__.splitlines()[0] if isinstance(value, BaseModel) else field.description
    if doc:
        lines.extend(f"{indent}# {line}" for line in textwrap.wrap(doc, 112 - len(indent)))
    if isinstance(value, BaseModel):
        lines.append(f"{indent}{name}:")
        for child in type(value).model_fields:
            _field_lines(value, child, depth + 1, lines)
    else:
        dumped = model.model_dump(mode="json", include={name})[name]
        lines.append(f"{indent}{name}: {inline(dumped)}")


def known_paths() -> list[str]:
    """Every dotted section and key of params ('data', 'data.synth', 'data.synth.height', ...)."""
    found: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            found.append(prefix + name)
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                walk(field.annotation, f"{prefix}{name}.")

    walk(Params, "")
    return found


def setting_for_option(command: str, option: str) -> str | None:
    """The key of `command`'s sections that an unknown option names (`--buffer-size`, `--buffer_size` ->
    'train.buffer_size'), or None."""
    name = option.lstrip("-").split("=")[0].replace("-", "_")
    for section in COMMAND_SECTIONS.get(command, ()):
        if name in section_model(section).model_fields:
            return f"{section}.{name}"
    return None


def option_value(argv: Sequence[str], option: str) -> str:
    """The value the user wrote after `option` (`--lr 0.1`, `--lr=0.1`), or VALUE when there is none."""
    for i, arg in enumerate(argv):
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
        if arg == option and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            return argv[i + 1]
    return "VALUE"


def close_option(option: str, known: Sequence[str]) -> str | None:
    """The known option `option` is a likely typo of, compared without the dashes (all options share '--', so with
    them '--bogus' looked like '--out')."""
    by_name = {k.lstrip("-"): k for k in known if k.startswith("--")}
    close = difflib.get_close_matches(option.lstrip("-"), list(by_name), n=1, cutoff=0.75)
    return by_name[close[0]] if close else None


def set_without_equals(argv: Sequence[str]) -> str | None:
    """'--set KEY: missing ...' for the first `--set KEY VALUE` (a space where '=' belongs), else None."""
    for i, arg in enumerate(argv[:-1]):
        key = argv[i + 1]
        if arg == "--set" and "=" not in key and not key.startswith("-"):
            value = argv[i + 2] if i + 2 < len(argv) and not argv[i + 2].startswith("-") else "VALUE"
            return f"--set {key}: missing '=' between key and value (write --set {key}={value})"
    return None
