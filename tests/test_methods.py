"""The methods' losses against closed forms and independent recomputations: DER++ (and DER, ER), ER-ACE's masking,
the SGD step of the shared skeleton, the optimiser, the registry, and the on-device normalisation."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from ser_cli.continual.learner import build_learner
from ser_cli.continual.methods import StreamBatch, build_method, method_names
from ser_cli.continual.methods.derpp import derpp_terms
from ser_cli.continual.methods.er_ace import ace_mask
from ser_cli.models.normalize import IMAGENET_MEAN, IMAGENET_STD, Normalizer
from ser_cli.runtime.errors import UserError
from tests.continual_data import tiny_settings, tiny_stream

SHAPE = (3, 16, 24)


def _method(name: str, **overrides: object):
    settings = tiny_settings(method=name, **overrides)
    learner = build_learner(settings, "cpu")
    return build_method(name, learner, settings, SHAPE), settings


def _batch(task: int, epoch: int = 0) -> StreamBatch:
    images, maps, labels, _ = next(iter(tiny_stream().train_loader([task], epoch=epoch)))
    return StreamBatch(images, maps, labels)


def _fill(method, task: int = 0, with_logits: bool = False) -> None:
    for images, _, labels, _ in tiny_stream().train_loader([task]):
        logits = torch.randn(len(labels), method.settings.n_classes) if with_logits else None
        method.buffer.add(images, labels, task=task, logits=logits)


def _next_draws(method, n: int, k: int) -> list[torch.Tensor]:
    """The slot indices of the method's next k replay draws, from a copy of the buffer's generator."""
    gen = torch.Generator().set_state(method.buffer.generator.get_state())
    return [torch.randperm(method.buffer.filled, generator=gen)[:n] for _ in range(k)]


def test_derpp_terms_match_hand_computed_values() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    labels = torch.tensor([0, 2])
    logits_1, stored_1 = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[0.0, 2.0, 5.0]])
    logits_2, labels_2 = torch.tensor([[0.0, 0.0, 0.0], [1.0, -1.0, 0.0]]), torch.tensor([1, 0])
    terms = derpp_terms(logits, labels, logits_1, stored_1, logits_2, labels_2, alpha=0.1, beta=0.5)

    def ce(row: list[float], y: int) -> float:
        return math.log(sum(math.exp(v) for v in row)) - row[y]

    stream_ce = (ce([2.0, 0.0, -1.0], 0) + ce([0.5, 0.5, 3.0], 2)) / 2
    mse = (1.0 + 0.0 + 4.0) / 3  # mean over the (1, 3) elements
    replay_ce = (ce([0.0, 0.0, 0.0], 1) + ce([1.0, -1.0, 0.0], 0)) / 2
    assert terms["stream_ce"].item() == pytest.approx(stream_ce, rel=1e-6)
    assert terms["replay_mse"].item() == pytest.approx(0.1 * mse, rel=1e-6)
    assert terms["replay_ce"].item() == pytest.approx(0.5 * replay_ce, rel=1e-6)
    assert sum(terms.values()).item() == pytest.approx(stream_ce + 0.1 * mse + 0.5 * replay_ce, rel=1e-6)


def test_derpp_step_uses_two_independent_draws_and_stores_pre_update_logits() -> None:
    method, settings = _method("derpp", alpha=0.3, beta=0.7)
    _fill(method, task=0, with_logits=True)
    idx_1, idx_2 = _next_draws(method, settings.minibatch_size, 2)
    assert not torch.equal(idx_1, idx_2)  # the two draws are independent, not one draw used twice
    buf = copy.deepcopy(method.buffer)
    net = copy.deepcopy(method.learner.classifier)  # the classifier before the step
    batch = _batch(1)
    method.before_task(1)
    losses = method.observe(batch)

    norm = method.learner.normalize
    stream_logits = net(norm(batch.images))
    expected = derpp_terms(
        stream_logits,
        batch.labels,
        net(norm(buf.images[idx_1])),
        buf.logits[idx_1],
        net(norm(buf.images[idx_2])),
        buf.labels[idx_2],
        0.3,
        0.7,
    )
    for name in ("stream_ce", "replay_mse", "replay_ce"):
        assert torch.allclose(losses[name], expected[name], rtol=1e-5, atol=1e-6), name
    assert torch.allclose(losses["loss"], sum(expected.values()), rtol=1e-5)
    kept = torch.nonzero(method.buffer.tasks[: method.buffer.capacity] == 1).flatten().tolist()  # new samples
    assert kept
    for slot in kept:
        (i,) = [j for j in range(len(batch.labels)) if torch.equal(batch.images[j], method.buffer.images[slot])]
        assert torch.allclose(method.buffer.logits[slot], stream_logits[i].detach(), atol=1e-6)


def test_der_is_stream_ce_plus_alpha_mse() -> None:
    method, settings = _method("der", alpha=0.25)
    _fill(method, with_logits=True)
    (idx,) = _next_draws(method, settings.minibatch_size, 1)
    buf, net = copy.deepcopy(method.buffer), copy.deepcopy(method.learner.classifier)
    batch = _batch(1)
    losses = method.observe(batch)
    norm = method.learner.normalize
    assert set(losses) == {"stream_ce", "replay_mse", "loss"}
    assert torch.allclose(losses["stream_ce"], F.cross_entropy(net(norm(batch.images)), batch.labels), rtol=1e-5)
    want = 0.25 * F.mse_loss(net(norm(buf.images[idx])), buf.logits[idx])
    assert torch.allclose(losses["replay_mse"], want, rtol=1e-5)


def test_er_is_stream_ce_plus_replay_ce_once_the_buffer_has_samples() -> None:
    method, settings = _method("er")
    first = method.observe(_batch(0))
    assert set(first) == {"stream_ce", "loss"}  # empty buffer: no replay term yet
    (idx,) = _next_draws(method, settings.minibatch_size, 1)
    assert len(idx) == 4  # capped at the 4 samples stored so far
    buf, net = copy.deepcopy(method.buffer), copy.deepcopy(method.learner.classifier)
    losses = method.observe(_batch(0, epoch=1))
    want = F.cross_entropy(net(method.learner.normalize(buf.images[idx])), buf.labels[idx])
    assert torch.allclose(losses["replay_ce"], want, rtol=1e-5)
    assert torch.allclose(losses["loss"], losses["stream_ce"] + losses["replay_ce"])


@pytest.mark.parametrize(
    ("seen", "labels", "keep"),
    [
        ([0, 1, 2], [2], [2, 3, 4, 5]),  # present + every class from the largest seen one up
        ([0, 1, 2, 3], [2], [2, 3, 4, 5]),  # Mammoth keeps the largest seen class (3) even if absent
        ([0, 1, 2, 3], [2, 3, 1], [1, 2, 3, 4, 5]),
        ([0, 1, 2, 3, 4, 5], [4], [4]),  # the largest seen class is the last: present classes only
    ],
)
def test_er_ace_mask_follows_mammoth(seen: list[int], labels: list[int], keep: list[int]) -> None:
    seen_mask = torch.zeros(6, dtype=torch.bool)
    seen_mask[seen] = True
    mask = ace_mask(seen_mask, torch.tensor(labels))
    assert torch.nonzero(mask).flatten().tolist() == keep


def test_er_ace_masks_the_stream_loss_and_replays_only_from_the_second_task() -> None:
    method, _ = _method("er_ace")
    _fill(method, task=0)  # a non-empty buffer, yet no replay in task 0
    net = copy.deepcopy(method.learner.classifier)
    batch = _batch(0)
    first = method.observe(batch)
    assert set(first) == {"stream_ce", "loss"}
    assert torch.allclose(
        first["stream_ce"], F.cross_entropy(net(method.learner.normalize(batch.images)), batch.labels), rtol=1e-5
    )
    method.before_task(1)
    batch = _batch(1)  # labels 2 and 3; seen so far: 0..3 -> keep {present} | {3, 4, 5}
    net = copy.deepcopy(method.learner.classifier)
    losses = method.observe(batch)
    logits = net(method.learner.normalize(batch.images))
    keep = sorted(set(batch.labels.tolist()) | {3, 4, 5})
    sub = logits[:, keep].log_softmax(1)  # (B, |keep|): the masked logits drop out of the softmax
    want = -sub[torch.arange(len(batch.labels)), [keep.index(y) for y in batch.labels.tolist()]].mean()
    assert torch.allclose(losses["stream_ce"], want, rtol=1e-5)
    assert "replay_ce" in losses
    assert method.seen.tolist() == [True, True, True, True, False, False]


def test_the_skeleton_takes_one_plain_sgd_step() -> None:
    method, _ = _method("sgd", lr=0.1)
    net = copy.deepcopy(method.learner.classifier)
    batch = _batch(0)
    method.observe(batch)
    F.cross_entropy(net(method.learner.normalize(batch.images)), batch.labels).backward()
    for (name, got), want in zip(method.learner.classifier.named_parameters(), net.parameters(), strict=True):
        assert torch.allclose(got, want - 0.1 * want.grad, atol=1e-6), name


def test_optimizer_follows_settings_and_is_kept_across_tasks() -> None:
    method, _ = _method("er", lr=0.02, momentum=0.9, weight_decay=5e-4)
    (group,) = method.optimizer.param_groups
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.02, 0.9, 5e-4)
    optimizer = method.optimizer
    method.observe(_batch(0))
    buffers = [s["momentum_buffer"].clone() for s in optimizer.state.values()]
    method.after_task(0)
    method.before_task(1)
    assert method.optimizer is optimizer
    assert all(torch.equal(a, s["momentum_buffer"]) for a, s in zip(buffers, optimizer.state.values(), strict=True))


def test_registry_lists_methods_and_rejects_unknown_names_and_missing_buffers() -> None:
    assert method_names() == ["cope", "der", "derpp", "er", "er_ace", "joint", "sgd"]
    learner = build_learner(tiny_settings(), "cpu")
    with pytest.raises(UserError, match="unknown method 'ewc'; choose one of: cope, der, derpp, er, er_ace, joint, "):
        build_method("ewc", learner, tiny_settings(), SHAPE)
    with pytest.raises(UserError, match="buffer_size"):
        build_method("derpp", learner, tiny_settings(buffer_size=0), SHAPE)
    assert build_method("sgd", learner, tiny_settings(buffer_size=0), SHAPE).buffer is None


def test_normalizer_is_imagenet_mean_std() -> None:
    images = torch.randint(0, 256, (2, 3, 4, 5), dtype=torch.uint8)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(Normalizer("cpu")(images), (images / 255.0 - mean) / std, atol=1e-5)


def test_normalizer_unit_scale_matches_the_uint8_path() -> None:
    images = torch.randint(0, 256, (2, 3, 4, 5), dtype=torch.uint8)
    norm = Normalizer("cpu")
    assert torch.allclose(norm.unit(images / 255.0), norm(images), atol=1e-5)


def _summed_backward(method, batch: StreamBatch) -> list[torch.Tensor | None]:
    """The gradients one backward of the sum of all terms leaves (the step before per-term backward)."""
    x = method.learner.normalize(batch.images)
    method.learner.saliency_step(x, batch.maps)
    method.optimizer.zero_grad(set_to_none=True)
    sum(loss for _, loss in method.loss_terms(x, batch.labels)).backward()
    return [p.grad for p in method.learner.parameters()]


@pytest.mark.parametrize(("name", "ser", "mnp"), [
    ("derpp", False, "multiply"), ("derpp", True, "multiply"), ("derpp", True, "aggregate"),
    ("er_ace", True, "dwseparable"),
])
def test_per_term_backward_leaves_the_gradients_of_one_summed_backward_bit_for_bit(name, ser, mnp) -> None:
    # Two identical methods after three steps (the saliency decoder's dropout draws from the global generator).
    methods = []
    for _ in range(2):
        torch.manual_seed(0)
        method, _ = _method(name, ser=ser, mnp=mnp)
        for task, epoch in ((0, 0), (0, 1), (1, 0)):
            method.before_task(task)
            torch.manual_seed(task + 10 * epoch)
            method.observe(_batch(task, epoch))
        methods.append(method)
    per_term, summed = methods
    batch = _batch(1, epoch=1)
    torch.manual_seed(5)
    per_term.observe(batch)  # leaves its gradients in .grad (set to None only at the next step)
    torch.manual_seed(5)
    want = _summed_backward(summed, batch)
    got = [p.grad for p in per_term.learner.parameters()]
    assert sum(g is not None for g in want) > 10
    for g, w in zip(got, want, strict=True):
        assert (g is None and w is None) or torch.equal(g, w)
