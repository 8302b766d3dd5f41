"""Activation checkpointing (`train.activation_checkpointing`): the same steps as without it, bit for bit (BatchNorm
statistics included), with less memory kept for the backward."""

from __future__ import annotations

import pytest
import torch

from ser_cli.continual.learner import build_learner
from ser_cli.continual.methods import StreamBatch, build_method
from ser_cli.continual.run_io import config_hash
from tests.continual_data import tiny_settings, tiny_stream

SHAPE = (3, 16, 24)


def _trained(ser: bool, checkpointing: bool, mnp: str = "multiply") -> tuple[dict, list[dict]]:
    torch.manual_seed(0)
    settings = tiny_settings(method="derpp", ser=ser, mnp=mnp, activation_checkpointing=checkpointing)
    learner = build_learner(settings, "cpu")
    method = build_method("derpp", learner, settings, SHAPE)
    logs = []
    for task in (0,):  # four steps, the last three with both replay draws
        method.before_task(task)
        for images, maps, labels, _ in tiny_stream().train_loader([task]):
            torch.manual_seed(len(logs))  # the saliency decoder's dropout
            logs.append({k: v.item() for k, v in method.observe(StreamBatch(images, maps, labels)).items()})
    return learner.state_dict(), logs


def _tensors(state: object, prefix: str = "") -> dict[str, torch.Tensor]:
    if torch.is_tensor(state):
        return {prefix: state}
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, list | tuple) else []
    return {k: v for key, value in items for k, v in _tensors(value, f"{prefix}.{key}").items()}


@pytest.mark.parametrize(("ser", "mnp"), [(False, "multiply"), (True, "dwseparable")])
def test_checkpointed_steps_leave_the_same_weights_and_batchnorm_statistics(ser: bool, mnp: str) -> None:
    plain_state, plain_logs = _trained(ser, False, mnp)
    state, logs = _trained(ser, True, mnp)
    assert logs == plain_logs
    plain, got = _tensors(plain_state), _tensors(state)
    assert plain.keys() == got.keys() and any("running_mean" in k for k in got)
    assert all(torch.equal(got[k], plain[k]) for k in plain)


def _saved_bytes(checkpointing: bool) -> int:
    """Bytes autograd keeps for the backward of one classifier forward of a batch of 8."""
    learner = build_learner(tiny_settings(activation_checkpointing=checkpointing), "cpu")
    learner.train(True)
    x = torch.randn(8, *SHAPE)
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        learner.logits(x, "stream")
    return total


def test_checkpointing_keeps_a_fraction_of_the_activations_for_the_backward() -> None:
    plain, checkpointed = _saved_bytes(False), _saved_bytes(True)
    assert checkpointed < plain / 3, (plain, checkpointed)


def test_checkpointing_is_not_part_of_the_configuration_identity() -> None:
    assert config_hash(tiny_settings(activation_checkpointing=True)) == config_hash(tiny_settings())
