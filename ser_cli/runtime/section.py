"""The base of every settings model (`params.yaml` sections and the library's `TrainSettings`), and the one-line
wording of its validation errors."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

# Sane bounds of every float setting (and of seeds), in every section: a learning rate of 1e30 only makes NaN
# weights, and a seed beyond 2**32 - 1 fails deep in numpy's seeding.
MAX_LR = 10.0
MAX_WEIGHT = 1000.0  # loss weights, temperatures and step factors
MAX_SEED = 2**32 - 1

Precision = Literal["auto", "fp32", "bf16"]
PRECISION_HELP = "`auto`: bf16 autocast on CUDA, fp32 on CPU; `bf16` forces autocast; `fp32` disables it."
MemoryFormat = Literal["auto", "channels_last", "contiguous"]
MEMORY_FORMAT_HELP = ("Layout of images, weights and activations: `auto` is channels-last on the CPU and with bf16 "
                      "on CUDA, contiguous for fp32 on CUDA; `channels_last` / `contiguous` force one (other kernels: "
                      "results equal up to float rounding).")


class Section(BaseModel):
    """Strict about unknown keys and non-finite floats, immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value: object, info: ValidationInfo) -> object:
        # YAML `true` would silently become the number 1 in an int or float field.
        annotation = cls.model_fields[info.field_name].annotation
        if isinstance(value, bool) and annotation in (int, float, int | None, float | None):
            raise ValueError(f"expected a number, got the boolean {str(value).lower()}")
        return value


def error_message(item: dict[str, Any]) -> str:
    """One pydantic error (`ValidationError.errors()` item) as a short phrase: 'must be >= 1 (got 0)'."""
    kind, ctx, got = item["type"], item.get("ctx", {}), item.get("input")
    bounds = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
    if kind in bounds:
        limit = next(iter(v for k, v in ctx.items() if k in ("ge", "gt", "le", "lt")))
        return f"must be {bounds[kind]} {limit} (got {got!r})"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')} (got {got!r})"
    message = item["msg"].removeprefix("Value error, ")
    return f"{message} (got {got!r})" if kind != "value_error" else message
