"""Activation checkpointing (`train.activation_checkpointing`): the same steps as without it, bit for bit (BatchNorm
statistics included), with less memory kept for the backward."""

from __future__ import annotations

import weakref

import pytest
import torch

from ser_cli.continual.learner import build_learner
from ser_cli.continual.methods import StreamBatch, build_method
from ser_cli.models.recompute import recompute_in_backward
from ser_cli.runs.run_io import config_hash
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


def test_the_saliency_decoder_is_recomputed_one_block_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # recomputed whole, its backward held every block's activations at once (20 full-size maps at 288x384)
    from ser_cli.models import saliency_net

    recomputed: list[torch.nn.Module] = []

    def spy(fn, *inputs, modules):  # noqa: ANN001, ANN202
        recomputed.extend(modules)
        return recompute_in_backward(fn, *inputs, modules=modules)

    monkeypatch.setattr(saliency_net, "recompute_in_backward", spy)
    net = saliency_net.SaliencyNet("resnet18_reduced")
    net.set_activation_checkpointing(True)
    pred, _ = net(torch.randn(2, *SHAPE))
    decoder = net.decoder
    assert recomputed == [decoder.coarse, decoder.skip3, decoder.mid, decoder.skip2, decoder.fine]
    pred.sum().backward()
    recomputed.clear()
    net.set_activation_checkpointing(False)
    net(torch.randn(2, *SHAPE))
    assert recomputed == []


@pytest.mark.parametrize("checkpointing", [False, True])
def test_the_stream_taps_are_freed_before_the_replay_terms(checkpointing: bool) -> None:
    settings = tiny_settings(method="derpp", ser=True, activation_checkpointing=checkpointing)
    learner = build_learner(settings, "cpu")
    method = build_method("derpp", learner, settings, SHAPE)
    stream_step = learner.saliency.stream_step
    taps: list[weakref.ref] = []
    alive_at_replay: list[int] = []

    def recording_stream_step(x, maps):  # noqa: ANN001, ANN202
        out = stream_step(x, maps)
        taps[:] = [weakref.ref(t) for t in out[0]]
        return out

    replay = method.replay

    def recording_replay(n):  # noqa: ANN001, ANN202
        alive_at_replay.append(sum(ref() is not None for ref in taps))
        return replay(n)

    learner.saliency.stream_step = recording_stream_step
    method.replay = recording_replay
    method.before_task(0)
    for images, maps, labels, _ in list(tiny_stream().train_loader([0]))[:2]:
        method.observe(StreamBatch(images, maps, labels))
    assert len(taps) == 5 and alive_at_replay == [0, 0]  # the second step's two replay draws
    with pytest.raises(RuntimeError, match="needs the batch passed to saliency_step"):
        learner.logits(learner.normalize(images), "stream")
