"""CoPE: the PPP loss against closed forms and an independent loop implementation, the momentum prototype update,
the prototype head, the class-balanced buffer, one fresh gradient per inner step, exact resume, config hashes kept,
and `ser train --method cope --ser` + `ser evaluate` end to end."""

from __future__ import annotations

import copy
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from ser_cli.cli.app import app
from ser_cli.continual.balanced_buffer import ClassBalancedBuffer
from ser_cli.continual.learner import build_learner
from ser_cli.continual.loop import ContinualTrainer
from ser_cli.continual.methods import StreamBatch, build_method
from ser_cli.continual.methods.cope import momentum_update, ppp_terms
from ser_cli.continual.settings import TrainSettings
from ser_cli.models.prototype_head import PrototypeHead
from ser_cli.models.saliency_net import SaliencyNet
from ser_cli.runs.run_io import config_hash, load_run
from ser_cli.runs.saliency_file import save_saliency_checkpoint
from tests.continual_data import tiny_settings, tiny_stream
from tests.test_loop import _assert_same_run, _serialise


def _unit(*angles_deg: float) -> torch.Tensor:
    a = torch.tensor(angles_deg, dtype=torch.float64) * math.pi / 180
    return torch.stack([a.cos(), a.sin()], dim=1)  # (N, 2)


def test_ppp_of_one_sample_per_class_matches_the_closed_form() -> None:
    """x0 (class 0) and x1 (class 1), prototypes p0, p1: one proxy each, so every probability is a 2-way ratio."""
    z, protos, T = _unit(10, 100), _unit(0, 90), 0.5
    e = lambda u, v: math.exp(float(u @ v) / T)  # noqa: E731
    x0, x1, p0, p1 = z[0], z[1], protos[0], protos[1]
    attract = math.log(e(x0, p0) / (e(x0, p0) + e(x0, p1))) + math.log(e(x1, p1) / (e(x1, p1) + e(x1, p0)))
    # class 0 repels x1 through x0 and p0; class 1 repels x0 through x1 and p1
    rep_0 = 1 - (e(x1, x0) / (e(x1, x0) + e(x1, p1)) + e(x1, p0) / (e(x1, p0) + e(x1, p1))) / 2
    rep_1 = 1 - (e(x0, x1) / (e(x0, x1) + e(x0, p0)) + e(x0, p1) / (e(x0, p1) + e(x0, p0))) / 2
    terms = ppp_terms(z, torch.tensor([0, 1]), protos, torch.tensor([True, True]), T)
    assert terms["attractor"].item() == pytest.approx(-attract / 2, rel=1e-12)
    assert terms["repellor"].item() == pytest.approx(-(math.log(rep_0) + math.log(rep_1)) / 2, rel=1e-12)


def _ppp_numpy(z: np.ndarray, y: list[int], protos: np.ndarray, known: list[int], T: float) -> tuple[float, float]:
    """The PPP loss written from its definition, class by class, with plain ratios of exponentials."""
    e = lambda u, v: math.exp(float(u @ v) / T)  # noqa: E731
    attract = repel = 0.0
    for c in sorted(set(y)):
        others = [protos[k] for k in known if k != c]
        for i in (i for i in range(len(y)) if y[i] == c):
            rest = sum(e(z[i], p) for p in others)
            proxies = [z[j] for j in range(len(y)) if y[j] == c and j != i] + [protos[c]]
            attract += math.log(np.mean([e(z[i], u) / (e(z[i], u) + rest) for u in proxies]))
            for j in (j for j in range(len(y)) if y[j] != c):
                rest_j = sum(e(z[j], p) for p in others)
                p_x = e(z[j], z[i]) / (e(z[j], z[i]) + rest_j)
                p_p = e(z[j], protos[c]) / (e(z[j], protos[c]) + rest_j)
                repel += math.log(1 - (p_x + p_p) / 2)
    return -attract / len(y), -repel / len(y)


@pytest.mark.parametrize("T", [0.5, 0.05])
def test_ppp_matches_the_definition_with_pseudo_prototypes_and_absent_classes(T: float) -> None:
    """Three samples (two of class 0), a third known class absent from the batch (a repellor prototype only), and
    an unknown class 3 whose (garbage) prototype row must not count."""
    z = _unit(20, -30, 120)
    y = [0, 0, 1]
    protos = torch.cat([_unit(0, 90, 200), torch.tensor([[5.0, 5.0]], dtype=torch.float64)])
    known = torch.tensor([True, True, True, False])
    terms = ppp_terms(z, torch.tensor(y), protos, known, T)
    attract, repel = _ppp_numpy(z.numpy(), y, protos.numpy(), [0, 1, 2], T)
    assert terms["attractor"].item() == pytest.approx(attract, rel=1e-9)
    assert terms["repellor"].item() == pytest.approx(repel, rel=1e-9)


def test_ppp_gradient_flows_through_queries_not_through_attractor_proxies() -> None:
    """Two samples of one class: the attractor of x0 has x1 as a (constant) proxy, so d attractor / d x1 comes only
    from x1's own attractor term: the same as if x0 were a fixed vector."""
    z = _unit(10, 40).requires_grad_(True)
    protos, known, T = _unit(0, 90), torch.tensor([True, True]), 0.5
    ppp_terms(z, torch.tensor([0, 0]), protos, known, T)["attractor"].backward()
    x1 = _unit(40).requires_grad_(True)
    z_fixed = torch.cat([_unit(10), x1])
    # x1's attractor alone: proxies x0 (constant) and p0, over the other prototype p1
    e = lambda u, v: torch.exp(u @ v / T)  # noqa: E731
    rest = e(x1[0], protos[1])
    term = torch.log((e(x1[0], z_fixed[0]) / (e(x1[0], z_fixed[0]) + rest)
                      + e(x1[0], protos[0]) / (e(x1[0], protos[0]) + rest)) / 2)
    (-term / 2).backward()
    assert torch.allclose(z.grad[1], x1.grad[0], atol=1e-12)


def test_momentum_update_matches_a_hand_computation() -> None:
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    emb = torch.tensor([[0.0, 1.0], [0.6, 0.8]])  # both class 0: mean (0.3, 0.9)
    new = momentum_update(protos, emb, torch.tensor([0, 0]), momentum=0.9)
    want = torch.tensor([0.9 + 0.1 * 0.3, 0.1 * 0.9])
    assert torch.allclose(new[0], want / want.norm(), atol=1e-7)
    assert torch.equal(new[1], protos[1])  # class 1 not in the batch: unchanged


def test_the_head_scores_cosine_over_temperature_and_never_predicts_unknown_classes() -> None:
    head = PrototypeHead(in_features=3, n_classes=3, dim=2, temperature=0.1)
    head.prototypes.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]))
    head.known.copy_(torch.tensor([True, True, False]))
    z = F.normalize(torch.tensor([[0.6, 0.8], [1.0, -1.0]]), dim=1)
    logits = head.similarities(z)
    assert torch.allclose(logits[:, :2], z @ head.prototypes[:2].t() / 0.1)
    assert (logits[:, 2] == torch.finfo(torch.float32).min).all()  # class 2 would be the best match for z[0]
    assert logits.argmax(1).tolist() == [1, 0]
    assert F.cross_entropy(logits, torch.tensor([1, 0])).isfinite()


def _balanced(seed: int, capacity: int = 12) -> ClassBalancedBuffer:
    return ClassBalancedBuffer(capacity, (1, 1, 1), "cpu", seed=seed)


def _feed(buf: ClassBalancedBuffer, labels: list[int], batch: int = 4) -> None:
    for start in range(0, len(labels), batch):
        y = torch.tensor(labels[start : start + batch])
        images = (torch.arange(start, start + len(y)) % 256).to(torch.uint8).view(-1, 1, 1, 1)
        buf.add(images, y, task=0)


def _class_incremental(seed: int) -> list[int]:
    """3 tasks of 2 classes, 20 samples per class, shuffled within each task."""
    g = torch.Generator().manual_seed(seed)
    return [c for t in range(3) for c in (torch.tensor([2 * t, 2 * t + 1]).repeat(20)[torch.randperm(40, generator=g)]
                                          ).tolist()]


def test_class_balanced_buffer_gives_every_seen_class_the_same_share() -> None:
    buf = _balanced(seed=0)
    labels = _class_incremental(0)
    _feed(buf, labels[:40])
    assert buf.class_counts() == {0: 6, 1: 6}
    _feed(buf, labels[40:])
    assert buf.class_counts() == {c: 2 for c in range(6)}
    assert sorted(buf.labels[: buf.capacity].tolist()) == sorted(c for c in range(6) for _ in range(2))
    assert len(buf) == 12 and buf.seen == 120


def test_class_balanced_buffer_is_seeded_and_resumes_exactly() -> None:
    labels = _class_incremental(1)
    a, b, other = _balanced(5), _balanced(5), _balanced(6)
    for buf in (a, b, other):
        _feed(buf, labels[:60])
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, other.images)
    resumed = _balanced(99)
    resumed.load_state_dict(torch.load(io.BytesIO(_serialise(a.state_dict())), weights_only=True))
    for buf in (a, resumed):
        _feed(buf, labels[60:])
    assert torch.equal(a.images[:12], resumed.images[:12]) and torch.equal(a.labels[:12], resumed.labels[:12])
    assert a.class_seen == resumed.class_seen and torch.equal(a.sample(5)["labels"], resumed.sample(5)["labels"])


SHAPE = (3, 16, 24)


def _cope(**overrides: object):
    settings = tiny_settings(method="cope", **overrides)
    return build_method("cope", build_learner(settings, "cpu"), settings, SHAPE), settings


def _batch(task: int, epoch: int = 0) -> StreamBatch:
    images, maps, labels, _ = next(iter(tiny_stream().train_loader([task], epoch=epoch)))
    return StreamBatch(images, maps, labels)


def test_inner_iterations_are_independent_sgd_steps_and_prototypes_follow_their_embeddings() -> None:
    method, _ = _cope(cope_iterations=2, lr=0.1)
    method.observe(_batch(0))  # buffer and prototypes of task 0
    method.before_task(1)
    batch = _batch(1)
    reference = copy.deepcopy(method)
    rng = torch.get_rng_state()
    method.observe(batch)
    # The reference: the same two steps written out, each from a zero gradient.
    torch.set_rng_state(rng)
    reference._add_prototypes(batch.labels)
    x = reference.learner.normalize(batch.images)
    outs = []
    for _ in range(2):
        reference.optimizer.zero_grad(set_to_none=True)
        out = reference.losses(x, batch.labels)
        sum(out.terms.values()).backward()
        reference.optimizer.step()
        outs.append(out)
    for (name, got), want in zip(method.learner.classifier.named_parameters(),
                                 reference.learner.classifier.parameters(), strict=True):
        assert torch.equal(got, want), name
    seen_z = torch.cat([outs[0].embeddings[4:], outs[1].embeddings])  # replay of both, stream of the last
    seen_y = torch.cat([outs[0].labels[4:], outs[1].labels])
    want = momentum_update(reference.head.prototypes, seen_z, seen_y, 0.9)
    assert torch.equal(method.head.prototypes, want)
    assert method.head.known.tolist() == [True] * 4 + [False] * 2


def test_cope_trains_the_projection_with_the_classifier_and_scores_through_the_prototypes() -> None:
    method, _ = _cope(cope_iterations=1)
    head = method.learner.classifier.head
    assert isinstance(head, PrototypeHead) and head.projection.weight.shape == (256, 160)
    assert any(p is head.projection.weight for p in method.optimizer.param_groups[0]["params"])
    assert {"head.prototypes", "head.known"} <= set(method.learner.classifier.state_dict())
    losses = method.observe(_batch(0))
    assert set(losses) == {"attractor", "repellor", "loss"}
    x = method.learner.normalize(_batch(0).images)
    z = head.embed(method.learner.pooled(x, "eval"))
    assert torch.allclose(method.learner.logits(x, "eval"), head.similarities(z))


@pytest.mark.slow
def test_a_resumed_cope_ser_run_is_bit_identical() -> None:
    saved: dict[int, bytes] = {}
    settings = tiny_settings(method="cope", ser=True, n_tasks=2, cope_iterations=2, checkpoint_every=5)
    full = ContinualTrainer(settings, tiny_stream(n_tasks=2),
                            checkpoint=lambda s: saved.setdefault(s["position"]["step"], _serialise(s)))
    full.run()
    resumed = ContinualTrainer(tiny_settings(method="cope", ser=True, n_tasks=2, cope_iterations=2),
                               tiny_stream(n_tasks=2))
    resumed.load_state_dict(torch.load(io.BytesIO(saved[5]), weights_only=True))  # task 1, batch 1 of 4
    resumed.run()
    _assert_same_run(full, resumed)


def test_cope_settings_leave_other_methods_hashes_and_older_checkpoints_alone() -> None:
    assert config_hash(TrainSettings()) == "a51b4b113de43a05"  # the hash of the defaults before CoPE existed
    assert config_hash(TrainSettings(cope_dim=64)) == config_hash(TrainSettings())
    assert config_hash(TrainSettings(method="cope", cope_dim=64)) != config_hash(TrainSettings(method="cope"))
    trainer = ContinualTrainer(tiny_settings(method="er"), tiny_stream())
    state = trainer.state_dict()
    state["settings"] = {k: v for k, v in state["settings"].items() if not k.startswith("cope_")}
    ContinualTrainer(tiny_settings(method="er"), tiny_stream()).load_state_dict(state)  # no "other settings" error


@pytest.mark.slow
def test_ser_train_and_evaluate_cope_end_to_end(tiny_synth: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    save_saliency_checkpoint(tmp_path / "sal.pt", SaliencyNet("resnet18_reduced"), "untrained", {})
    runner = CliRunner()
    trained = runner.invoke(app, [
        "-q", "train", "--data", str(tiny_synth), "--out", str(tmp_path / "run"), "--device", "cpu",
        "--method", "cope", "--ser", "--set", "train.n_tasks=2", "--set", "train.classes_per_task=2",
        "--set", "train.buffer_size=8", "--set", "train.batch_size=4", "--set", "train.minibatch_size=4",
        "--set", "train.cope_iterations=1", "--set", f"train.saliency_checkpoint={tmp_path / 'sal.pt'}"])
    assert trained.exit_code == 0, trained.output
    evaluated = runner.invoke(app, [
        "-q", "evaluate", "--run", str(tmp_path / "run"), "--data", str(tiny_synth), "--out", str(tmp_path / "eval"),
        "--device", "cpu", "--set", "evaluate.epsilons=[2/255]", "--set", "evaluate.attacks=[fgsm]",
        "--set", "evaluate.attack_images=4"])
    assert evaluated.exit_code == 0, evaluated.output
    train_m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    eval_m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert eval_m["test_class_il_avg_acc"] == pytest.approx(train_m["class_il_final_avg_acc"])
    assert eval_m["test_task_il_avg_acc"] == pytest.approx(train_m["task_il_final_avg_acc"])
    assert 0 <= eval_m["attention_on_object"] <= 1
    log = (tmp_path / "run" / "train_log.csv").read_text().splitlines()[0]
    assert "attractor" in log and "repellor" in log
    run = load_run(tmp_path / "run")
    head = run.learner.classifier.head
    assert isinstance(head, PrototypeHead) and head.known.all()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["method"] == "cope"
