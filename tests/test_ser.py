"""Faithfulness of SER (method.md sections 3-4): the modulation at the five points, detached saliency features
taken before the saliency update, a saliency update that sees only the stream batch, and a truly frozen branch."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from ser_cli.continual.learner import build_learner
from ser_cli.continual.loop import ContinualTrainer
from ser_cli.continual.methods import StreamBatch, build_method
from ser_cli.continual.ser import saliency_optimizer
from ser_cli.metrics.saliency import kld_loss
from ser_cli.models.saliency_net import SaliencyNet
from ser_cli.runtime.errors import UserError
from tests.continual_data import tiny_settings, tiny_stream


def _batch(stream, task: int = 0, n: int = 4) -> StreamBatch:
    images, maps, labels, _ = next(iter(stream.train_loader([task], epoch=1)))
    return StreamBatch(images[:n], maps[:n], labels[:n])


def _capture_stage_io(classifier) -> tuple[dict, list]:
    """Record each block's pre-ReLU output and what the next block (or the head, as a mean) receives."""
    pre, received, handles = {}, {}, []
    for i, block in enumerate(classifier.blocks):
        handles.append(block.register_forward_hook(lambda m, a, out, i=i: pre.__setitem__(i, out.detach())))
        handles.append(block.register_forward_pre_hook(lambda m, a, i=i: received.__setitem__(i - 1, a[0].detach())))
    head = classifier.head
    handles.append(head.register_forward_pre_hook(lambda m, a: received.__setitem__("pooled", a[0].detach())))
    return {"pre": pre, "received": received}, handles


@pytest.mark.parametrize("role", ["stream", "replay"])
def test_multiply_modulation_is_relu_of_product_at_all_five_points(role: str) -> None:
    torch.manual_seed(0)
    learner = build_learner(tiny_settings(ser=True, mnp="multiply"), "cpu")
    batch = _batch(tiny_stream())
    x = learner.normalize(batch.images)
    before = copy.deepcopy(learner.saliency.net)
    learner.saliency_step(x, batch.maps)
    if role == "stream":
        s = before.train().encoder.features(x)  # the stream uses the features from before the update
    else:
        with torch.no_grad():
            s = copy.deepcopy(learner.saliency.net).eval().encoder.features(x)
    seen, handles = _capture_stage_io(learner.classifier)
    learner.logits(x, role)
    for h in handles:
        h.remove()
    for i in range(4):
        expected = F.relu(seen["pre"][i] * s[i])
        assert torch.equal(seen["received"][i], expected), f"point {i}"
        assert not torch.equal(expected, F.relu(seen["pre"][i]))  # the saliency features really act
    assert torch.allclose(seen["received"]["pooled"], F.relu(seen["pre"][4] * s[4]).mean(dim=(2, 3)), atol=1e-6)


def test_disabled_points_keep_the_plain_relu() -> None:
    learner = build_learner(tiny_settings(ser=True, mnp_blocks=(0, 1, 0, 1, 0)), "cpu")
    batch = _batch(tiny_stream())
    x = learner.normalize(batch.images)
    s = learner.saliency.features(x)
    seen, _ = _capture_stage_io(learner.classifier)
    learner.logits(x, "replay")
    assert torch.equal(seen["received"][0], F.relu(seen["pre"][0]))
    assert torch.equal(seen["received"][1], F.relu(seen["pre"][1] * s[1]))
    assert torch.equal(seen["received"][2], F.relu(seen["pre"][2]))


def test_saliency_update_is_one_kl_step_on_the_stream_batch_only() -> None:
    """After a DER++ step with a full buffer, the saliency net equals a reference that took one SGD step on the
    stream batch's KL loss alone: no classification gradient and nothing from the replay draws reaches it, and
    replay forwards (eval mode) leave its BN statistics alone."""
    settings = tiny_settings(method="derpp", ser=True, sal_lr=0.05)
    learner = build_learner(settings, "cpu")
    method = build_method("derpp", learner, settings, (3, 16, 24))
    stream = tiny_stream()
    for images, _, labels, _ in stream.train_loader([0]):
        method.buffer.add(images, labels, task=0, logits=torch.randn(len(labels), settings.n_classes))
    reference = copy.deepcopy(learner.saliency.net)
    ref_opt = saliency_optimizer(reference, settings.sal_lr)
    batch = _batch(stream, task=1)
    rng = torch.get_rng_state()  # dropout masks of the decoder: replay the same ones for the reference
    losses = method.observe(batch)
    assert {"replay_mse", "replay_ce"} <= set(losses)  # replay did happen
    torch.set_rng_state(rng)
    reference.train()
    pred, _ = reference(learner.normalize(batch.images))
    ref_loss = kld_loss(pred, batch.maps)
    ref_opt.zero_grad()
    ref_loss.backward()
    ref_opt.step()
    assert torch.equal(losses["saliency_kld"], ref_loss.detach())
    net_state = learner.saliency.net.state_dict()
    for (name, got), (_, want) in zip(net_state.items(), reference.state_dict().items(), strict=True):
        assert torch.equal(got, want), name
    for got, want in zip(learner.saliency.net.parameters(), reference.parameters(), strict=True):
        assert torch.equal(got.grad, want.grad)  # no classification gradient added after the saliency step


def test_saliency_optimizer_groups_follow_the_paper() -> None:
    net = SaliencyNet("resnet18_reduced")
    opt = saliency_optimizer(net, 0.005)
    decoder, encoder = opt.param_groups
    assert (decoder["lr"], decoder["weight_decay"], decoder["momentum"]) == (0.005, 1e-4, 0.9)
    assert (encoder["lr"], encoder["weight_decay"], encoder["momentum"]) == (pytest.approx(0.0005), 1e-5, 0.9)
    assert len(decoder["params"]) + len(encoder["params"]) == len(list(net.parameters()))


def test_the_branch_optimiser_reads_its_train_keys_and_is_pretrainings_builder() -> None:
    """train.sal_* reach the SER branch's SGD; at the same values pretraining's optimiser is the same SGD."""
    from ser_cli.saliency.saliency_trainer import build_optimizer
    from ser_cli.saliency.settings import SaliencyConfig

    keys = {"sal_encoder_lr_factor": 0.2, "sal_momentum": 0.5, "sal_weight_decay_decoder": 0.003,
            "sal_weight_decay_encoder": 0.0007}
    learner = build_learner(tiny_settings(ser=True, sal_lr=0.05, **keys), "cpu")
    decoder, encoder = learner.saliency.optimizer.param_groups
    assert (decoder["lr"], decoder["momentum"], decoder["weight_decay"]) == (0.05, 0.5, 0.003)
    assert (encoder["lr"], encoder["momentum"], encoder["weight_decay"]) == (pytest.approx(0.01), 0.5, 0.0007)
    net = SaliencyNet("resnet18_reduced")
    pretrain = build_optimizer(net, SaliencyConfig(lr=0.05, encoder_lr_factor=0.2, momentum=0.5,
                                                   weight_decay_decoder=0.003, weight_decay_encoder=0.0007))
    ser = saliency_optimizer(net, 0.05, tiny_settings(ser=True, **keys))
    drop = ("params", "initial_lr")
    assert [{k: v for k, v in g.items() if k not in drop} for g in pretrain.param_groups] == \
        [{k: v for k, v in g.items() if k not in drop} for g in ser.param_groups]


def test_the_branch_optimiser_keys_keep_every_earlier_config_hash() -> None:
    """At their defaults the four train.sal_* keys are left out of the hash (runs made before them keep theirs);
    changed, each makes another configuration."""
    import hashlib
    import json

    from ser_cli.runs.run_io import METHOD_SETTINGS, NOT_IN_CONFIG_HASH, config_hash

    settings = tiny_settings(method="derpp", ser=True)
    later = ("sal_encoder_lr_factor", "sal_momentum", "sal_weight_decay_decoder", "sal_weight_decay_encoder")
    before = {k: v for k, v in settings.to_dict().items() if k not in NOT_IN_CONFIG_HASH and k not in later
              and "derpp" in METHOD_SETTINGS.get(k, ("derpp",))}
    assert config_hash(settings) == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]
    changed = {config_hash(tiny_settings(method="derpp", ser=True, **{k: 0.5})) for k in later}
    assert len(changed) == 4 and config_hash(settings) not in changed


def test_stream_features_come_from_before_the_saliency_update_and_are_detached() -> None:
    learner = build_learner(tiny_settings(ser=True, sal_lr=0.5), "cpu")
    batch = _batch(tiny_stream())
    x = learner.normalize(batch.images)
    before = copy.deepcopy(learner.saliency.net).train()
    learner.saliency_step(x, batch.maps)
    stream_taps = learner._taps(x, "stream")
    expected = before.encoder.features(x)
    after = copy.deepcopy(learner.saliency.net).train().encoder.features(x)
    for got, want, post in zip(stream_taps, expected, after, strict=True):
        assert torch.equal(got, want)
        assert not got.requires_grad
        assert not torch.equal(got, post)  # the update did change the features: the test can tell them apart


def test_stream_role_refuses_another_batch() -> None:
    learner = build_learner(tiny_settings(ser=True), "cpu")
    batch = _batch(tiny_stream())
    x = learner.normalize(batch.images)
    learner.saliency_step(x, batch.maps)
    with pytest.raises(RuntimeError, match="saliency_step"):
        learner.logits(x.clone(), "stream")


def test_frozen_saliency_branch_is_bit_identical_after_training() -> None:
    net = SaliencyNet("resnet18_reduced")
    initial = copy.deepcopy(net.state_dict())
    trainer = ContinualTrainer(
        tiny_settings(method="derpp", ser=True, saliency_frozen=True), tiny_stream(), saliency_net=net
    )
    branch = trainer.learner.saliency
    assert branch.optimizer is None and not net.training
    assert not any(p.requires_grad for p in net.parameters())
    result = trainer.run()
    assert result.steps == 12
    for name, value in net.state_dict().items():
        assert torch.equal(value, initial[name]), name  # BN running statistics included
    assert not net.training


def test_saliency_net_must_match_the_classifier_backbone() -> None:
    with pytest.raises(UserError, match="taps"):
        build_learner(tiny_settings(ser=True, backbone="resnet18_reduced"), "cpu", SaliencyNet("resnet18"))


def test_eval_logits_are_differentiable_end_to_end_through_both_branches() -> None:
    learner = build_learner(tiny_settings(ser=True), "cpu")
    learner.train(False)
    batch = _batch(tiny_stream())
    x01 = (batch.images.float() / 255).requires_grad_(True)
    logits = learner.eval_logits(x01)
    with torch.no_grad():
        assert torch.allclose(logits, learner.logits(learner.normalize(batch.images), "replay"), atol=1e-5)
    (grad_full,) = torch.autograd.grad(logits[:, 0].sum(), x01)
    # The same function with the saliency taps cut from the graph: the classifier-only part of the gradient.
    x = learner.normalize.unit(x01)
    taps = [t.detach() for t in learner.saliency.eval_features(x)]
    cut = learner.classifier(x, modulate=lambda i, c: learner.modulation(i, c, taps[i]))
    (grad_cut,) = torch.autograd.grad(cut[:, 0].sum(), x01)
    assert torch.allclose(cut, logits, atol=1e-6)
    assert not torch.allclose(grad_full, grad_cut, atol=1e-6)  # the saliency branch contributes to the gradient
