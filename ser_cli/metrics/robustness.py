"""Adversarial robustness: L-inf PGD and FGSM against a whole model, and accuracy per attack and epsilon.

FGSM is Goodfellow et al., ICLR 2015; PGD is Madry et al., ICLR 2018 (L-inf, random start uniform in the eps-ball,
`steps` signed-gradient ascent steps of size `eps * step_factor`, projection onto the ball and onto [0, 1] after
each step). Both follow torchattacks' `FGSM` / `PGD` (Kim, arXiv:2010.01950) operation for operation, so the
numbers are comparable with papers that use it; they are written here instead of depending on torchattacks because
its 3.5.1 release pins `requests~=2.25.1` and would downgrade requests / urllib3 / idna under DVC. The attacked
function is `logits(x01)`: images in [0, 1], any normalisation inside, so the attack sees the model end to end
(for SER the saliency branch too, method.md section 5). The loss is cross-entropy of the true label over every
logit (class-IL over the classes of all tasks). Accuracies are percentages.

PGD's random start is drawn per image: image i of the evaluation starts from eps * (2u - 1), with u uniform from a
generator seeded by (seed, i). An image's attack then does not depend on the batch it runs in, on how the images are
split over processes (`torchrun ... evaluate`) or on the other epsilons; the same u for every epsilon (common random
numbers) also keeps the robustness curve free of independent start noise between budgets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ser_cli.runtime.errors import UserError
from ser_cli.runtime.seeding import derive_seed

Logits = Callable[[Tensor], Tensor]  # x01 (B, 3, H, W) in [0, 1] -> (B, n_classes)
Generators = torch.Generator | Sequence[torch.Generator] | None  # one for the batch, or one per image
START_STREAM = 5  # derive_seed stream of PGD's per-image random starts


@dataclass(frozen=True)
class AttackSettings:
    """How the iterative attack runs.

    Attributes:
        pgd_steps: PGD iterations (Madry et al.: 7-40; default 10).
        pgd_step_factor: PGD step size as a fraction of epsilon (default 1/4: the ball's diameter in 8 steps).
    """

    pgd_steps: int = 10
    pgd_step_factor: float = 0.25


Attack = Callable[[Logits, Tensor, Tensor, float, AttackSettings, Generators], Tensor]
ATTACKS: dict[str, Attack] = {}


def register_attack(name: str) -> Callable[[Attack], Attack]:
    """Register `attack(logits, x01, labels, eps, settings, generator) -> adversarial x01` under `name`.

    `generator` is one generator for the batch, one per image (row i of the batch draws from the i-th), or None.
    """

    def decorate(attack: Attack) -> Attack:
        if name in ATTACKS:
            raise ValueError(f"attack {name!r} registered twice")
        ATTACKS[name] = attack
        return attack

    return decorate


def attack_loss(logits: Logits, x: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of the true labels over every logit: the quantity both attacks ascend."""
    return F.cross_entropy(logits(x).float(), labels)


def _input_gradient(logits: Logits, x: Tensor, labels: Tensor) -> Tensor:
    """d loss / d x at x, (B, 3, H, W); the model's parameters get no gradient. Works inside `no_grad` too."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(attack_loss(logits, x, labels), x)
    return grad


def uniform_start(x: Tensor, eps: float, generator: Generators) -> Tensor:
    """Noise uniform in [-eps, eps] shaped like x (B, 3, H, W), from one generator or one per image."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.empty_like(x).uniform_(-eps, eps, generator=generator)
    return torch.stack([torch.empty_like(xi).uniform_(-eps, eps, generator=g) for xi, g in zip(x, generator,
                                                                                                 strict=True)])


def image_generators(seed: int, image_ids: Iterable[int], device: torch.device) -> list[torch.Generator]:
    """One fresh generator per image, seeded by (seed, image id): the image's random start, wherever it runs."""
    return [torch.Generator(device=device).manual_seed(derive_seed(seed, START_STREAM, int(i))) for i in image_ids]


@register_attack("pgd")
def pgd(logits: Logits, x: Tensor, labels: Tensor, eps: float, settings: AttackSettings,
        generator: Generators = None) -> Tensor:
    """L-inf PGD with a uniform random start; every iterate stays in the eps-ball around x and in [0, 1]."""
    step = eps * settings.pgd_step_factor
    noise = uniform_start(x, eps, generator)  # (B, 3, H, W)
    adv = (x + noise).clamp(0, 1).detach()
    for _ in range(settings.pgd_steps):
        adv = adv + step * _input_gradient(logits, adv, labels).sign()
        adv = (x + (adv - x).clamp(-eps, eps)).clamp(0, 1).detach()  # project onto the ball, then the image range
    return adv


@register_attack("fgsm")
def fgsm(logits: Logits, x: Tensor, labels: Tensor, eps: float, settings: AttackSettings,
         generator: Generators = None) -> Tensor:
    """One signed-gradient step of size eps, clipped to [0, 1] (deterministic; `settings`, `generator` unused)."""
    grad = _input_gradient(logits, x, labels)
    return (x + eps * grad.sign()).clamp(0, 1).detach()


def check_epsilons(epsilons: Iterable[float]) -> list[float]:
    """Epsilons as floats, each in [0, 1] (the image scale); UserError naming the first bad one."""
    out = [float(e) for e in epsilons]
    for e in out:
        if not 0.0 <= e <= 1.0:
            raise UserError(f"evaluate.epsilons: {e} is outside [0, 1] (epsilons are on the [0, 1] image scale; "
                            "write 8/255 for 8 grey levels)")
    return out


def check_attacks(names: Iterable[str]) -> list[str]:
    """Attack names, each registered; UserError otherwise."""
    names = list(names)
    for name in names:
        if name not in ATTACKS:
            raise UserError(f"evaluate.attacks: unknown attack {name!r}; known: {', '.join(sorted(ATTACKS))}")
    return names


def eps_label(eps: float) -> str:
    """Epsilon in 1/255 units for metric keys: 2/255 -> "2", 0.5/255 -> "0.5", 1/1000 -> "0.255"."""
    grey = eps * 255.0
    if abs(grey - round(grey)) < 1e-6:
        return str(int(round(grey)))
    return format(round(grey, 3), "g")


def metric_key(attack: str, eps: float) -> str:
    """Flat metrics key, e.g. ("pgd", 2/255) -> "pgd_acc_eps_2"."""
    return f"{attack}_acc_eps_{eps_label(eps)}"


def _correct(logits: Logits, x: Tensor, labels: Tensor) -> Tensor:
    """(B,) bool: which images `logits` classifies correctly."""
    with torch.no_grad():
        return logits(x).argmax(1) == labels


@dataclass
class RobustnessResult:
    """Accuracy (percent) of clean and attacked images over the same images.

    Attributes:
        n_images: Images attacked.
        clean: Clean accuracy.
        attacked: {(attack, eps): accuracy}.
        success: {(attack, eps): attack success rate}: the percentage of the clean-correct images that the attack
            makes wrong (NaN when none is clean-correct). Robust accuracies near the floor hide how two models
            differ; the success rate compares them on the images each gets right.
    """

    n_images: int
    clean: float
    attacked: dict[tuple[str, float], float]
    success: dict[tuple[str, float], float] = field(default_factory=dict)

    def flat(self) -> dict[str, float]:
        """{"clean_acc": ..., "pgd_acc_eps_2": ..., "pgd_success_eps_2": ..., ...} for a metrics file."""
        return {"clean_acc": self.clean, **{metric_key(a, e): acc for (a, e), acc in self.attacked.items()},
                **{metric_key(a, e).replace("_acc_", "_success_"): r for (a, e), r in self.success.items()}}

    def rows(self) -> list[dict[str, float | str]]:
        """Long-format rows (attack, epsilon, eps_255, accuracy), eps 0 = clean for each attack, for a CSV plot."""
        attacks = sorted({a for a, _ in self.attacked}, key=list(ATTACKS).index)
        rows = [{"attack": a, "epsilon": 0.0, "eps_255": 0.0, "accuracy": self.clean} for a in attacks]
        rows += [{"attack": a, "epsilon": e, "eps_255": round(e * 255, 6), "accuracy": acc}
                 for (a, e), acc in sorted(self.attacked.items(), key=lambda kv: (list(ATTACKS).index(kv[0][0]),
                                                                                  kv[0][1]))]
        return rows


def robust_accuracy(logits: Logits, batches: Iterable[tuple[Tensor, Tensor, Tensor]], attacks: list[str],
                    epsilons: list[float], settings: AttackSettings, seed: int = 0,
                    on_batch: Callable[[int], None] | None = None) -> RobustnessResult:
    """Clean and adversarial accuracy of `logits` over `batches`, for every (attack, epsilon).

    Args:
        logits: The model, x01 -> logits, in eval mode; differentiable with respect to its input.
        batches: (x01 float (B, 3, H, W) in [0, 1] on the model's device, labels (B,), image ids (B,) int).
        attacks: Registered attack names.
        epsilons: L-inf budgets on the [0, 1] scale.
        settings: PGD steps and step size.
        seed: With each image's id, seeds its PGD random start (`image_generators`).
        on_batch: Called with each batch's size after it is done (progress reporting).

    Returns:
        The accuracies; an empty input gives NaN everywhere.
    """
    hits, n = attack_hits(logits, batches, attacks, epsilons, settings, seed, on_batch)
    return robustness_result(attacks, epsilons, hits, n)


def attack_hits(logits: Logits, batches: Iterable[tuple[Tensor, Tensor, Tensor]], attacks: list[str],
                epsilons: list[float], settings: AttackSettings, seed: int = 0,
                on_batch: Callable[[int], None] | None = None) -> tuple[np.ndarray, int]:
    """Counts, int64 (1 + 2 x attacks x epsilons,), and the number of images: correct clean predictions first, then
    per (attack, eps) in order the correct attacked predictions, then per (attack, eps) the images correct both
    clean and attacked. Counts of image shares add up to the counts of all the images (processes sum them)."""
    attacks, epsilons = check_attacks(attacks), check_epsilons(epsilons)
    specs = [(a, e) for a in attacks for e in epsilons]
    hits, n = np.zeros(1 + 2 * len(specs), np.int64), 0
    for x, labels, ids in batches:
        clean = _correct(logits, x, labels)  # (B,)
        hits[0] += int(clean.sum())
        for j, (name, eps) in enumerate(specs, start=1):
            starts = image_generators(seed, ids.tolist(), x.device)
            attacked = _correct(logits, ATTACKS[name](logits, x, labels, eps, settings, starts), labels)  # (B,)
            hits[j] += int(attacked.sum())
            hits[j + len(specs)] += int((attacked & clean).sum())
        n += len(labels)
        if on_batch is not None:
            on_batch(len(labels))
    return hits, n


def robustness_result(attacks: list[str], epsilons: list[float], hits: np.ndarray, n: int) -> RobustnessResult:
    """Percentages from `attack_hits` counts."""
    specs = [(a, float(e)) for a in attacks for e in epsilons]
    acc = 100.0 * hits / n if n else np.full(len(hits), np.nan)
    kept = hits[1 + len(specs):]  # (specs,) correct both clean and attacked
    success = 100.0 * (hits[0] - kept) / hits[0] if hits[0] else np.full(len(specs), np.nan)
    return RobustnessResult(n, float(acc[0]), {s: float(a) for s, a in zip(specs, acc[1:1 + len(specs)], strict=True)},
                            {s: float(r) for s, r in zip(specs, success, strict=True)})


def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Up to `n` row indices, class-balanced (class counts differ by at most one while classes last), sorted.

    Each class's rows are shuffled by the seed; rows are then taken round-robin over the classes (first the first
    row of every class, then the second, ...), classes in a seeded order so the remainder is spread fairly.
    """
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    ranked = order[np.argsort(labels[order], kind="stable")]  # rows grouped by class, shuffled within each class
    classes, starts = np.unique(labels[ranked], return_index=True)
    rank = np.arange(len(ranked)) - np.repeat(starts, np.diff(np.append(starts, len(ranked))))  # (N,) rank in class
    class_turn = rng.permutation(len(classes))[np.searchsorted(classes, labels[ranked])]  # (N,) class tie-break
    picked = ranked[np.lexsort((class_turn, rank))[:n]]
    return np.sort(picked)
