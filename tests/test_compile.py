"""`train.compile` (torch.compile of the classifier and the saliency network) and fused SGD on CUDA: the same steps
as eager up to float rounding, state dicts unchanged, and not part of a run's identity."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import torch

from ser_cli.continual import learner as learner_module
from ser_cli.continual.learner import build_learner
from ser_cli.continual.methods import build_method
from ser_cli.runs.run_io import config_hash
from ser_cli.runtime.device import fused_optimizer_option
from tests.continual_data import derpp_ser_steps, tiny_settings

SHAPE = (3, 16, 24)


@pytest.fixture(autouse=True)
def _no_tqdm_monitor(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """torch.compile shows tqdm bars, whose monitor thread would outlive the test and make the fork-based tests
    that share this worker refuse to fork (`tests/faults.run_forked`)."""
    from tqdm import tqdm

    monkeypatch.setattr(tqdm, "monitor_interval", 0)
    yield
    if tqdm.monitor is not None:
        tqdm.monitor.exit()
        tqdm.monitor = None


def _trained(compile_: bool) -> tuple[dict[str, torch.Tensor], list[dict[str, float]], bool]:
    learner, logs = derpp_ser_steps(3, compile=compile_)  # the last two steps replay
    nets = (learner.classifier, learner.saliency.net)
    compiled = all(net._compiled_call_impl is not None for net in nets)  # what `nn.Module.compile` sets
    return learner.state_dict(), logs, compiled


def test_compiled_steps_match_eager_ones_and_keep_the_state_dict(monkeypatch: pytest.MonkeyPatch) -> None:
    # aot_eager traces through dynamo and AOT autograd as inductor does, without its minute of C++ compilation
    monkeypatch.setattr(learner_module, "COMPILE_BACKEND", "aot_eager")
    eager_state, eager_logs, eager_compiled = _trained(False)
    state, logs, compiled = _trained(True)
    assert compiled and not eager_compiled
    assert [log.keys() for log in logs] == [log.keys() for log in eager_logs]
    for log, eager in zip(logs, eager_logs, strict=True):
        assert log == pytest.approx(eager, rel=1e-4, abs=1e-6)
    got, want = state["classifier"], eager_state["classifier"]
    assert got.keys() == want.keys()  # no `_orig_mod.` prefix: checkpoints load either way
    # The traced graph orders some reductions differently from eager kernels: after 3 steps on an AVX-512 host, 5
    # of stage 4's 115,200 conv weights differ by up to 2.6e-5 (all others within 1e-5), hence atol 5e-5.
    for key, value in want.items():
        torch.testing.assert_close(got[key], value, rtol=1e-3, atol=5e-5, msg=key)


def test_a_restored_run_is_eager_even_if_it_trained_compiled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(learner_module, "COMPILE_BACKEND", "aot_eager")
    settings = tiny_settings(ser=True, compile=True)
    trained = build_learner(settings, "cpu")
    restored = learner_module.restore_learner(settings, trained.state_dict(), "cpu")
    assert trained.classifier._compiled_call_impl is not None
    assert restored.classifier._compiled_call_impl is None and restored.saliency.net._compiled_call_impl is None


def test_compile_is_not_part_of_the_configuration_identity() -> None:
    assert config_hash(tiny_settings(compile=True)) == config_hash(tiny_settings())


def test_sgd_is_fused_only_when_every_parameter_is_on_cuda() -> None:
    cuda, cpu = SimpleNamespace(is_cuda=True), torch.zeros(1)
    assert fused_optimizer_option([cuda, cuda]) == {"fused": True}
    assert fused_optimizer_option([cuda, cpu]) == {}
    assert fused_optimizer_option(iter([cpu])) == {} and fused_optimizer_option([]) == {}
    learner = build_learner(tiny_settings(), "cpu")
    method = build_method("derpp", learner, tiny_settings(), SHAPE)
    assert not method.optimizer.defaults["fused"]  # the CPU keeps the for-each implementation
