"""Adversarial attacks: invariants on a trained model, a closed form, end-to-end gradients, subsets, key names."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from ser_cli.config import EvaluateConfig
from ser_cli.metrics.robustness import (
    ATTACKS,
    AttackSettings,
    attack_loss,
    check_epsilons,
    eps_label,
    fgsm,
    image_generators,
    metric_key,
    pgd,
    robust_accuracy,
    stratified_subset,
    uniform_start,
)
from ser_cli.models import SaliencyNet, build_backbone, build_modulation
from ser_cli.runtime.errors import UserError

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
EPSILONS = [0.0, 4 / 255, 8 / 255, 16 / 255]

def _easy_batch(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """3 classes: grey noise with channel y raised by 0.12 (about 31 grey levels)."""
    y = torch.randint(0, 3, (n,), generator=g)
    x = 0.5 + 0.12 * torch.randn(n, 3, 12, 12, generator=g)  # (n, 3, 12, 12)
    x[torch.arange(n), y] += 0.12
    return x.clamp(0, 1), y


@pytest.fixture(scope="module")
def trained() -> tuple:
    """A small CNN trained for 30 Adam steps; `logits` normalises inside, as the evaluated runs do."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3))
    opt = torch.optim.Adam(net.parameters(), 1e-2)

    def logits(x01: torch.Tensor) -> torch.Tensor:
        return net((x01 - MEAN) / STD)

    for _ in range(30):
        x, y = _easy_batch(32, g)
        loss = F.cross_entropy(logits(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    x, y = _easy_batch(96, g)
    return logits, x, y


def _accuracy(logits, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return 100.0 * float((logits(x).argmax(1) == y).float().mean())


def test_attack_ordering_on_a_trained_model(trained: tuple) -> None:
    logits, x, y = trained
    ids = torch.arange(len(y))
    batches = [(x[:48], y[:48], ids[:48]), (x[48:], y[48:], ids[48:])]
    result = robust_accuracy(logits, batches, ["pgd", "fgsm"], EPSILONS,
                             AttackSettings(pgd_steps=10, pgd_step_factor=0.25), seed=0)
    assert result.n_images == 96
    assert result.clean == pytest.approx(_accuracy(logits, x, y)) and result.clean >= 95.0
    for eps in EPSILONS:
        assert result.attacked[("pgd", eps)] <= result.attacked[("fgsm", eps)] <= result.clean
    assert result.attacked[("pgd", 0.0)] == result.attacked[("fgsm", 0.0)] == result.clean  # eps 0 is exactly clean
    assert result.attacked[("pgd", 16 / 255)] < result.clean - 20  # the budget range is not vacuous
    flat = result.flat()
    assert flat["pgd_acc_eps_16"] == result.attacked[("pgd", 16 / 255)] and flat["clean_acc"] == result.clean
    pgd_curve = [result.attacked[("pgd", e)] for e in EPSILONS]
    assert pgd_curve == sorted(pgd_curve, reverse=True)


def test_eps_zero_returns_the_images_bit_for_bit(trained: tuple) -> None:
    logits, x, y = trained
    for name in ATTACKS:
        assert torch.equal(ATTACKS[name](logits, x, y, 0.0, AttackSettings(), None), x)


def test_pgd_iterates_stay_in_the_ball_and_the_image_range(trained: tuple) -> None:
    logits, x, y = trained
    eps = 8 / 255
    adv = pgd(logits, x, y, eps, AttackSettings(pgd_steps=5), torch.Generator().manual_seed(1))
    assert float((adv - x).abs().max()) <= eps + 1e-6
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert float((adv - x).abs().max()) > eps / 2  # it did move
    again = pgd(logits, x, y, eps, AttackSettings(pgd_steps=5), torch.Generator().manual_seed(1))
    assert torch.equal(adv, again)  # seeded random start: reproducible


def test_random_starts_are_per_image_whatever_the_batch() -> None:
    """Image i's start is eps * (2u - 1) with u from (seed, i): the same alone, in any batch, for any epsilon."""
    x, ids = torch.rand(5, 3, 4, 6), [7, 3, 11, 0, 2]
    together = uniform_start(x, 0.1, image_generators(0, ids, torch.device("cpu")))  # (5, 3, 4, 6)
    for i, image in enumerate(ids):
        alone = uniform_start(x[i : i + 1], 0.1, image_generators(0, [image], torch.device("cpu")))
        assert torch.equal(alone[0], together[i])
    bigger = uniform_start(x, 0.2, image_generators(0, ids, torch.device("cpu")))
    torch.testing.assert_close(bigger, 2 * together)  # common random numbers over epsilons
    assert float(together.abs().max()) <= 0.1 and float(together.std()) > 0.05
    assert not torch.equal(together, uniform_start(x, 0.1, image_generators(1, ids, torch.device("cpu"))))


def test_pgd_ascends_the_loss_more_than_fgsm(trained: tuple) -> None:
    logits, x, y = trained
    eps = 8 / 255
    with torch.no_grad():
        clean, one = attack_loss(logits, x, y), attack_loss(logits, fgsm(logits, x, y, eps, AttackSettings()), y)
        many = attack_loss(logits, pgd(logits, x, y, eps, AttackSettings(), torch.Generator().manual_seed(0)), y)
    assert clean < one < many


def test_fgsm_on_a_linear_two_class_model_matches_the_closed_form() -> None:
    # CE gradient of a 2-class linear model w.r.t. x is p_other * (w_other - w_y): its sign is sign(w_other - w_y).
    torch.manual_seed(0)
    W = torch.randn(2, 3 * 4 * 4)
    x = torch.rand(6, 3, 4, 4) * 0.8 + 0.1
    y = torch.tensor([0, 1, 0, 1, 1, 0])

    def logits(x01: torch.Tensor) -> torch.Tensor:
        return x01.flatten(1) @ W.T

    eps = 0.05
    direction = (W[1 - y] - W[y]).sign().view_as(x)  # (6, 3, 4, 4)
    expected = (x + eps * direction).clamp(0, 1)
    assert torch.allclose(fgsm(logits, x, y, eps, AttackSettings()), expected, atol=1e-7)


def test_gradients_reach_both_branches_of_an_ser_model() -> None:
    """The attack loss of image -> saliency net -> modulated classifier has gradient in both networks and in x."""
    torch.manual_seed(0)
    classifier = build_backbone("resnet18_reduced", 4).eval()
    net = SaliencyNet("resnet18_reduced").eval()
    modulation = build_modulation("multiply", classifier.tap_channels, [1, 1, 1, 1, 1])

    def logits(x01: torch.Tensor, detach_saliency: bool = False) -> torch.Tensor:
        x = (x01 - MEAN) / STD
        taps = net.encoder.features(x)
        taps = [t.detach() for t in taps] if detach_saliency else taps
        return classifier(x, modulate=lambda i, c: modulation(i, c, taps[i]))

    x = torch.rand(2, 3, 16, 24, requires_grad=True)
    y = torch.tensor([0, 3])
    attack_loss(logits, x, y).backward()
    encoder_grads = [p.grad for p in net.encoder.parameters() if p.grad is not None]
    assert encoder_grads and sum(float(g.abs().sum()) for g in encoder_grads) > 0
    assert sum(float(p.grad.abs().sum()) for p in classifier.parameters() if p.grad is not None) > 0
    # The input gradient the attack follows includes the saliency path: it differs from the detached one.
    (detached,) = torch.autograd.grad(attack_loss(lambda z: logits(z, True), x, y), x)
    assert not torch.allclose(x.grad, detached)


def test_stratified_subset_is_balanced_sorted_and_seeded() -> None:
    labels = np.repeat(np.arange(5), [10, 10, 10, 3, 10])
    rows = stratified_subset(labels, 17, seed=0)
    assert len(rows) == 17 and np.all(np.diff(rows) > 0)
    counts = np.bincount(labels[rows], minlength=5)
    assert counts.tolist().count(4) == 2 and counts.tolist().count(3) == 3  # 17 = 4+4+3+3+3
    big = np.bincount(labels[stratified_subset(labels, 40, seed=0)], minlength=5)
    assert big[3] == 3 and big.sum() == 40 and big.max() - big[[0, 1, 2, 4]].min() <= 1  # class 3 runs out
    assert np.array_equal(rows, stratified_subset(labels, 17, seed=0))
    assert not np.array_equal(rows, stratified_subset(labels, 17, seed=1))
    assert np.array_equal(stratified_subset(labels, 1000, seed=0), np.arange(len(labels)))


def test_metric_keys_in_grey_levels() -> None:
    assert metric_key("pgd", 2 / 255) == "pgd_acc_eps_2"
    assert metric_key("fgsm", 8 / 255) == "fgsm_acc_eps_8"
    assert eps_label(0.5 / 255) == "0.5" and eps_label(0.0) == "0" and eps_label(1.0) == "255"


def test_epsilons_outside_the_unit_interval_are_refused() -> None:
    with pytest.raises(UserError, match="outside"):
        check_epsilons([2 / 255, 1.5])
    with pytest.raises(UserError, match="outside"):
        check_epsilons([-0.01])
    with pytest.raises(ValidationError):
        EvaluateConfig(epsilons=["300/255"])
    assert EvaluateConfig(epsilons=["2/255", 0.5]).epsilons == [2 / 255, 0.5]


def test_attack_success_rate_closed_form() -> None:
    """A linear 2-class model on the mean brightness: FGSM at eps moves every pixel by eps against the label, so a
    clean-correct image flips exactly when its distance to the boundary (0.5) is below eps."""
    from ser_cli.metrics.robustness import attack_hits, robustness_result

    def logits(x01: torch.Tensor) -> torch.Tensor:
        m = x01.mean(dim=(1, 2, 3)) - 0.5  # (B,)
        return torch.stack([-m, m], dim=1)  # class 1 when brighter than 0.5

    levels = torch.tensor([0.30, 0.47, 0.49, 0.52, 0.55, 0.70, 0.45, 0.60])  # distances 0.2 .03 .01 .02 .05 .2 ...
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 0])  # the last two are wrong on clean images
    x = levels.view(-1, 1, 1, 1).expand(-1, 3, 4, 4).clone()
    eps = 0.04
    hits, n = attack_hits(logits, [(x, labels, torch.arange(8))], ["fgsm"], [eps], AttackSettings(1, 1.0))
    result = robustness_result(["fgsm"], [eps], hits, n)
    clean_correct = 6
    flipped = 3  # distances 0.03, 0.01 and 0.02 are below eps; 0.2, 0.05 and 0.2 are not
    assert result.clean == pytest.approx(100 * clean_correct / 8)
    assert result.success[("fgsm", eps)] == pytest.approx(100 * flipped / clean_correct)
    assert result.flat()["fgsm_success_eps_10.2"] == pytest.approx(50.0)
