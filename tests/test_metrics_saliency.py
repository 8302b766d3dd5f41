"""Saliency metrics against closed-form cases, numpy ports of the MIT Matlab code, and pysaliency (vendored scores).

"MIT" means the Matlab code of cvzoya/saliency (`code_forMetrics`); "Tübingen" means pysaliency / the new benchmark.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ser_cli.metrics import saliency as S
from ser_cli.runtime.errors import UserError
from tools.pysaliency_oracle import CALLS, as_float, low_level_scores

H, W = 32, 48


def _maps(seed: int, b: int = 4, levels: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random (pred, target, fixations), float64; `levels` quantises pred to create ties."""
    g = torch.Generator().manual_seed(seed)
    pred = torch.rand(b, H, W, generator=g, dtype=torch.float64)
    if levels is not None:
        pred = torch.floor(pred * levels)
    target = torch.rand(b, H, W, generator=g, dtype=torch.float64) ** 3
    fixations = torch.rand(b, H, W, generator=g) < 0.03
    return pred, target, fixations


def _t(x: list) -> torch.Tensor:
    return torch.tensor([x], dtype=torch.float64)  # one image, (1, H, W)


# ------------------------------------------------------------------------------------------------
# Independent numpy implementations: line-by-line ports of the MIT Matlab functions.
# ------------------------------------------------------------------------------------------------


def _mit_auc_judd_np(smap: np.ndarray, fix: np.ndarray, rng: np.random.Generator | None = None) -> float:
    """Port of MIT AUC_Judd.m (jitter only when `rng` is given)."""
    s = smap.astype(np.float64).ravel()
    if rng is not None:
        s = s + rng.random(s.shape) / 1e7
    s = (s - s.min()) / (s.max() - s.min())
    f = fix.ravel() > 0
    sth = np.sort(s[f])[::-1]
    n_fix, n_pix = len(sth), len(s)
    tp, fp = np.zeros(n_fix + 2), np.zeros(n_fix + 2)
    tp[-1] = fp[-1] = 1
    for i, thresh in enumerate(sth, start=1):
        above = np.sum(s >= thresh)
        tp[i] = i / n_fix
        fp[i] = (above - i) / (n_pix - n_fix)
    return float(np.trapezoid(tp, fp))


def _mit_sauc_np(
    smap: np.ndarray, fix: np.ndarray, other: np.ndarray, n_splits: int, rng: np.random.Generator
) -> float:
    """Port of MIT AUC_shuffled.m with stepSize 0.1."""
    s = smap.astype(np.float64).ravel()
    s = (s - s.min()) / (s.max() - s.min())
    sth = s[fix.ravel() > 0]
    ind = np.flatnonzero(other.ravel() > 0)
    k = min(len(sth), len(ind))
    aucs = []
    for _ in range(n_splits):
        curfix = s[rng.permutation(ind)[:k]]
        top = max(sth.max(), curfix.max())
        threshes = (0.1 * np.arange(int(np.floor(top / 0.1 + 1e-9)) + 1))[::-1]
        tp = np.concatenate([[0], [(sth >= t).mean() for t in threshes], [1]])
        fp = np.concatenate([[0], [(curfix >= t).mean() for t in threshes], [1]])
        aucs.append(np.trapezoid(tp, fp))
    return float(np.mean(aucs))


def _pairwise_auc_np(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Mann-Whitney AUC by brute force over all pairs, ties half."""
    diff = positives[:, None] - negatives[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


# ------------------------------------------------------------------------------------------------
# Closed-form cases
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("convention", ["mit", "tuebingen"])
def test_identical_maps_give_cc_1_sim_1_kld_0(convention: str) -> None:
    pred, _, _ = _maps(0)
    assert torch.allclose(S.cc(pred, pred), torch.ones(4, dtype=torch.float64))
    assert torch.allclose(S.sim(pred, pred, convention), torch.ones(4, dtype=torch.float64))
    assert S.kld(pred, pred).abs().max() < 1e-12


def test_uniform_prediction_cc_0_nss_0_tuebingen_auc_half() -> None:
    """A constant map: CC 0 (MIT gives NaN), NSS 0 in both conventions, Tübingen AUC and sAUC exactly 0.5."""
    _, target, fix = _maps(1)
    flat = torch.full_like(target, 0.3)
    assert torch.equal(S.cc(flat, target), torch.zeros(4, dtype=torch.float64))
    assert torch.equal(S.cc(target, flat), torch.zeros(4, dtype=torch.float64))
    for convention in ("mit", "tuebingen"):
        assert torch.equal(S.nss(flat, fix, convention), torch.zeros(4, dtype=torch.float64))
    assert torch.equal(S.auc_judd(flat, fix, "tuebingen"), torch.full((4,), 0.5, dtype=torch.float64))
    other = S.other_image_fixations(fix)
    for convention in ("mit", "tuebingen"):
        assert torch.allclose(S.shuffled_auc(flat, fix, other, convention), torch.full((4,), 0.5, dtype=torch.float64))


def test_uniform_prediction_mit_auc_judd_is_half_plus_trapezoid_bias() -> None:
    """MIT AUC-Judd on a constant map: E over jitter = 0.5 + 1 / (2 (N_fix + 1)); one fixation -> 0.75."""
    fix = torch.zeros(3, 6, 8, dtype=torch.bool)
    fix[0, 2, 3] = True  # N = 1
    fix[1, :2, :2] = True  # N = 4
    fix[2, 0, :] = True  # N = 8
    flat = torch.ones(3, 6, 8, dtype=torch.float64)
    expected = torch.tensor([0.5 + 1 / 4, 0.5 + 1 / 10, 0.5 + 1 / 18], dtype=torch.float64)
    assert torch.allclose(S.auc_judd(flat, fix, "mit"), expected)
    # The Matlab code with its random jitter agrees on average (Monte Carlo over 3000 jitters).
    rng = np.random.default_rng(0)
    mc = np.mean([_mit_auc_judd_np(flat[1].numpy(), fix[1].numpy(), rng) for _ in range(3000)])
    assert abs(mc - expected[1].item()) < 0.005


def test_nss_single_fixation_by_hand_both_ddofs() -> None:
    """Map [[0,1,2],[3,4,5]], fixation on 5: mean 2.5, sum of squares 17.5 -> MIT (ddof 1) 2.5/sqrt(3.5)."""
    pred = _t([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
    fix = torch.zeros(1, 2, 3, dtype=torch.bool)
    fix[0, 1, 2] = True
    assert S.nss(pred, fix, "mit").item() == pytest.approx(2.5 / math.sqrt(17.5 / 5))  # 1.336306
    assert S.nss(pred, fix, "tuebingen").item() == pytest.approx(2.5 / math.sqrt(17.5 / 6))  # 1.463850


def test_auc_judd_known_rank_by_hand() -> None:
    """Map values 0..5, one fixation on the second-highest value (4).

    MIT: negatives = 5 unfixated pixels, one above -> ROC (0,0), (1/5, 1), (1, 1): area 0.1 + 0.8 = 0.9.
    Tübingen: negatives = all 6 pixels: 4 below, itself tied -> (4 + 0.5) / 6 = 0.75.
    """
    pred = _t([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
    fix = torch.zeros(1, 2, 3, dtype=torch.bool)
    fix[0, 1, 1] = True
    assert S.auc_judd(pred, fix, "mit").item() == pytest.approx(0.9)
    assert S.auc_judd(pred, fix, "tuebingen").item() == pytest.approx(0.75)
    assert _mit_auc_judd_np(pred[0].numpy(), fix[0].numpy()) == pytest.approx(0.9)


def test_cc_affine_anti_and_hand_computed() -> None:
    """target = 3 pred + 2 -> 1; -2 pred + 7 -> -1; x=[1,2,3,4], y=[1,3,2,4]: cov 4 / sqrt(5 * 5) = 0.8."""
    pred, _, _ = _maps(2)
    assert torch.allclose(S.cc(pred, 3 * pred + 2), torch.ones(4, dtype=torch.float64))
    assert torch.allclose(S.cc(pred, -2 * pred + 7), -torch.ones(4, dtype=torch.float64))
    assert S.cc(_t([[1.0, 2.0], [3.0, 4.0]]), _t([[1.0, 3.0], [2.0, 4.0]])).item() == pytest.approx(0.8)


@pytest.mark.parametrize("convention", ["mit", "tuebingen"])
def test_sim_disjoint_blobs_is_zero(convention: str) -> None:
    a, b = torch.zeros(1, H, W), torch.zeros(1, H, W)
    a[0, :10, :10], b[0, 20:, 30:] = 1.0, 1.0
    assert S.sim(a, b, convention).item() == 0.0


def test_sim_conventions_differ_by_min_max_hand_computed() -> None:
    """pred [1,2,3] vs target [3,2,1].

    MIT: min-max -> [0,.5,1], [1,.5,0] -> sums 1: [0,1/3,2/3], [2/3,1/3,0] -> SIM 1/3.
    Tübingen: [1,2,3]/6 vs [3,2,1]/6 -> 1/6 + 2/6 + 1/6 = 2/3.
    """
    pred, target = _t([[1.0, 2.0, 3.0]]), _t([[3.0, 2.0, 1.0]])
    assert S.sim(pred, target, "mit").item() == pytest.approx(1 / 3)
    assert S.sim(pred, target, "tuebingen").item() == pytest.approx(2 / 3)


def test_kld_two_pixel_hand_computed() -> None:
    """P [1,3] -> [1/4,3/4], Q [1,1] -> [1/2,1/2]: 0.5 ln 2 + 0.5 ln(2/3) = 0.5 ln(4/3) = 0.143841.

    Q [1,0], P [0,1]: 1 * ln(eps + 1/eps) = -ln(eps) = 36.043653 with Matlab's eps.
    """
    assert S.kld(_t([[1.0, 3.0]]), _t([[1.0, 1.0]])).item() == pytest.approx(0.5 * math.log(4 / 3), rel=1e-9)
    assert S.kld(_t([[0.0, 1.0]]), _t([[1.0, 0.0]])).item() == pytest.approx(-math.log(S.MIT_EPS), rel=1e-9)
    assert S.MIT_EPS == np.finfo(np.float64).eps


def test_kld_and_sim_invariant_to_scale() -> None:
    pred, target, _ = _maps(3)
    assert torch.allclose(S.kld(7 * pred, target), S.kld(pred, 0.2 * target))
    assert torch.allclose(S.sim(7 * pred, target, "tuebingen"), S.sim(pred, target, "tuebingen"))


# ------------------------------------------------------------------------------------------------
# Independent implementations
# ------------------------------------------------------------------------------------------------


def test_cc_and_nss_match_numpy() -> None:
    pred, target, fix = _maps(4)
    for i in range(4):
        p, f = pred[i].numpy(), fix[i].numpy()
        assert S.cc(pred, target)[i].item() == pytest.approx(np.corrcoef(p.ravel(), target[i].numpy().ravel())[0, 1])
        for convention, ddof in (("mit", 1), ("tuebingen", 0)):
            expected = ((p[f] - p.mean()) / p.std(ddof=ddof)).mean()
            assert S.nss(pred, fix, convention)[i].item() == pytest.approx(expected)


def test_auc_judd_mit_matches_matlab_port_on_distinct_values() -> None:
    """With distinct values MIT's jitter changes nothing, so the port and the closed form must agree exactly."""
    pred, _, fix = _maps(5)
    ours = S.auc_judd(pred, fix, "mit")
    for i in range(4):
        assert ours[i].item() == pytest.approx(_mit_auc_judd_np(pred[i].numpy(), fix[i].numpy()), abs=1e-12)


def test_auc_judd_mit_with_ties_is_expectation_of_jittered_matlab() -> None:
    """Map quantised to 4 levels (massive ties): closed form == Monte Carlo mean of the jittered Matlab code."""
    g = torch.Generator().manual_seed(6)
    pred = torch.floor(torch.rand(1, 6, 8, generator=g, dtype=torch.float64) * 4)
    fix = torch.rand(1, 6, 8, generator=g) < 0.15
    rng = np.random.default_rng(1)
    mc = np.mean([_mit_auc_judd_np(pred[0].numpy(), fix[0].numpy(), rng) for _ in range(4000)])
    assert S.auc_judd(pred, fix, "mit").item() == pytest.approx(mc, abs=0.004)


def test_tuebingen_auc_and_sauc_match_pairwise_count() -> None:
    pred, _, fix = _maps(7, levels=10)
    other = S.other_image_fixations(fix)
    auc, sauc = S.auc_judd(pred, fix, "tuebingen"), S.shuffled_auc(pred, fix, other, "tuebingen")
    for i in range(4):
        p, f, o = pred[i].numpy().ravel(), fix[i].numpy().ravel(), other[i].numpy().ravel()
        assert auc[i].item() == pytest.approx(_pairwise_auc_np(p[f], p))
        # Tübingen keeps duplicate other-image fixations: repeat each location by its count.
        assert sauc[i].item() == pytest.approx(_pairwise_auc_np(p[f], np.repeat(p, o)))


def test_shuffled_auc_mit_matches_matlab_port_when_draw_is_forced() -> None:
    """With |other| <= N_fix MIT takes every other-image fixation in every split: no randomness, exact match."""
    pred, _, fix = _maps(8)
    other = torch.zeros_like(fix)
    other[:, 5, 7:12] = True  # 5 candidate negatives < N_fix (about 46)
    ours = S.shuffled_auc(pred, fix, other, "mit", n_splits=3)
    for i in range(4):
        ref = _mit_sauc_np(pred[i].numpy(), fix[i].numpy(), other[i].numpy(), 3, np.random.default_rng(0))
        assert ours[i].item() == pytest.approx(ref, abs=1e-12)


def test_shuffled_auc_mit_random_draws_agree_with_port_and_are_seeded() -> None:
    pred, _, fix = _maps(9)
    other = S.other_image_fixations(fix)
    ours = S.shuffled_auc(pred, fix, other, "mit", n_splits=200, generator=torch.Generator().manual_seed(3))
    again = S.shuffled_auc(pred, fix, other, "mit", n_splits=200, generator=torch.Generator().manual_seed(3))
    assert torch.equal(ours, again)
    # no generator = the documented fresh generator seeded with 0; another seed draws other splits
    seeded0 = S.shuffled_auc(pred, fix, other, "mit", generator=torch.Generator().manual_seed(0))
    assert torch.equal(S.shuffled_auc(pred, fix, other, "mit"), seeded0)
    assert not torch.equal(seeded0, S.shuffled_auc(pred, fix, other, "mit", generator=torch.Generator().manual_seed(1)))
    rng = np.random.default_rng(0)
    ref = [_mit_sauc_np(pred[i].numpy(), fix[i].numpy(), other[i].numpy(), 200, rng) for i in range(4)]
    assert np.allclose(ours.numpy(), ref, atol=0.01)


def test_center_prior_is_beaten_by_shuffled_auc() -> None:
    """Fixations drawn from the centre prior for every image: the prior scores well on AUC-Judd but ~0.5 on sAUC."""
    prior = S.center_bias_map(H, W, sigma_frac=0.15, dtype=torch.float64)
    g = torch.Generator().manual_seed(10)
    idx = torch.multinomial(prior.flatten().expand(8, -1), 30, generator=g)  # (8, 30) fixated pixels
    fix = torch.zeros(8, H * W, dtype=torch.bool).scatter_(1, idx, True).view(8, H, W)
    pred = prior.expand(8, H, W)
    assert S.auc_judd(pred, fix, "tuebingen").mean().item() > 0.85
    assert abs(S.shuffled_auc(pred, fix, S.other_image_fixations(fix)).mean().item() - 0.5) < 0.08


def test_center_bias_map_is_a_normalised_centred_gaussian() -> None:
    """h=9 with sigma_frac=2/9 -> sigma 2 rows: two rows off centre the value drops by exp(-1/2)."""
    prior = S.center_bias_map(9, 17, sigma_frac=2 / 9, dtype=torch.float64)
    assert prior.sum().item() == pytest.approx(1.0)
    assert prior.argmax().item() == 4 * 17 + 8
    assert (prior[6, 8] / prior[4, 8]).item() == pytest.approx(math.exp(-0.5))
    assert torch.allclose(prior, prior.flip(0)) and torch.allclose(prior, prior.flip(1))


# ------------------------------------------------------------------------------------------------
# Batching, degenerate cases, losses, errors
# ------------------------------------------------------------------------------------------------


def test_batched_equals_per_image_loop() -> None:
    pred, target, fix = _maps(11, levels=20)
    other = S.other_image_fixations(fix)
    batched = {
        "kld": S.kld(pred, target),
        "cc": S.cc(pred, target),
        "sim": S.sim(pred, target),
        "nss": S.nss(pred, fix),
        "auc_mit": S.auc_judd(pred, fix, "mit"),
        "auc_tue": S.auc_judd(pred, fix, "tuebingen"),
        "sauc_tue": S.shuffled_auc(pred, fix, other),
    }
    for i in range(4):
        one = slice(i, i + 1)
        single = {
            "kld": S.kld(pred[one], target[one]),
            "cc": S.cc(pred[one], target[one]),
            "sim": S.sim(pred[one], target[one]),
            "nss": S.nss(pred[one], fix[one]),
            "auc_mit": S.auc_judd(pred[one], fix[one], "mit"),
            "auc_tue": S.auc_judd(pred[one], fix[one], "tuebingen"),
            "sauc_tue": S.shuffled_auc(pred[one], fix[one], other[one]),
        }
        for name, value in single.items():
            assert value.item() == pytest.approx(batched[name][i].item(), abs=1e-12), name


def test_empty_fixations_give_nan_only_for_that_image() -> None:
    pred, _, fix = _maps(12)
    fix[1] = False
    other = S.other_image_fixations(fix)
    for values in (
        S.nss(pred, fix),
        S.auc_judd(pred, fix),
        S.shuffled_auc(pred, fix, other),
        S.shuffled_auc(pred, fix, other, "mit", n_splits=5),
    ):
        assert torch.isnan(values[1]) and not torch.isnan(values[[0, 2, 3]]).any()


def test_all_zero_map_counts_as_uniform() -> None:
    _, target, _ = _maps(13)
    zero, uniform = torch.zeros_like(target), torch.ones_like(target)
    assert torch.allclose(S.kld(zero, target), S.kld(uniform, target))
    assert torch.allclose(S.sim(zero, target, "tuebingen"), S.sim(uniform, target, "tuebingen"))


def test_losses_combine_per_image_terms() -> None:
    pred, target, fix = _maps(14)
    fix[2] = False  # an image without fixations adds nothing to the NSS term
    nss = torch.nan_to_num(S.nss(pred, fix), nan=0.0)
    expected = (S.kld(pred, target) - 0.1 * S.cc(pred, target) - 0.1 * nss).mean()
    assert S.saliency_loss(pred, target, fix, w_cc=0.1, w_nss=0.1).item() == pytest.approx(expected.item())
    assert S.kld_loss(pred, target).item() == pytest.approx(S.kld(pred, target).mean().item())
    assert S.saliency_loss(pred, target).item() == pytest.approx(S.kld_loss(pred, target).item())


def test_loss_gradient_is_finite_for_constant_prediction_and_missing_fixations() -> None:
    _, target, fix = _maps(15)
    fix[0] = False
    pred = torch.full_like(target, 0.5, requires_grad=True)
    S.saliency_loss(pred, target, fix, w_cc=0.1, w_nss=0.1).backward()
    assert torch.isfinite(pred.grad).all()


def test_loss_gradient_descent_lowers_kld() -> None:
    """A few plain gradient steps on a free map move it toward the target (the loss is a usable objective)."""
    _, target, _ = _maps(16, b=2)
    logits = torch.zeros_like(target, requires_grad=True)
    start = S.kld_loss(torch.sigmoid(logits), target).item()
    for _ in range(20):
        loss = S.kld_loss(torch.sigmoid(logits), target)
        (grad,) = torch.autograd.grad(loss, logits)
        logits = (logits - 2000.0 * grad).detach().requires_grad_()
    assert S.kld_loss(torch.sigmoid(logits), target).item() < 0.5 * start


def test_saliency_scores_keys_and_values() -> None:
    pred, target, fix = _maps(17)
    scores = S.saliency_scores(pred, target, fix)
    assert set(scores) == {"kld", "cc", "sim", "nss", "auc_judd"}
    assert torch.equal(scores["auc_judd"], S.auc_judd(pred, fix, "mit"))
    assert set(S.saliency_scores(pred, target)) == {"kld", "cc", "sim"}


def test_user_errors() -> None:
    pred, target, fix = _maps(18)
    with pytest.raises(UserError, match="same shape"):
        S.cc(pred, target[:, :-1])
    with pytest.raises(UserError, match="convention"):
        S.sim(pred, target, "matlab")
    with pytest.raises(UserError, match="fixation"):
        S.saliency_loss(pred, target, None, w_nss=0.1)
    with pytest.raises(UserError, match=r"\(B, H, W\)"):
        S.kld(pred[0], target[0])


def test_channel_dimension_is_accepted() -> None:
    pred, target, _ = _maps(19)
    assert torch.equal(S.kld(pred[:, None], target[:, None]), S.kld(pred, target))


@pytest.mark.cuda  # detects host synchronisations, which only a CUDA device has
def test_no_host_sync_on_cuda() -> None:
    pred, target, fix = (x.cuda() for x in _maps(20))
    other = S.other_image_fixations(fix)
    torch.cuda.set_sync_debug_mode("error")
    try:
        S.saliency_scores(pred, target, fix)
        S.shuffled_auc(pred, fix, other)
        S.shuffled_auc(pred, fix, other, "mit", n_splits=3)
        S.saliency_loss(pred, target, fix, w_cc=0.1, w_nss=0.1)
    finally:
        torch.cuda.set_sync_debug_mode("default")


# ------------------------------------------------------------------------------------------------
# pysaliency as the oracle. It cannot be installed beside this project's numpy, so its scores on fixed inputs are
# vendored (tools/pysaliency_oracle.py writes tests/data/pysaliency_oracle.{npz,json} in its own environment and
# records how); where pysaliency does import, it is also run live on the same inputs.
# ------------------------------------------------------------------------------------------------

ORACLE = Path(__file__).parent / "data" / "pysaliency_oracle"


def _oracle_inputs() -> dict[str, torch.Tensor]:
    """The vendored inputs, as float64 maps, bool fixation masks and int64 other-image counts."""
    with np.load(ORACLE.with_suffix(".npz")) as stored:
        return {name: torch.from_numpy(array) for name, array in as_float(dict(stored)).items()}


def _ours(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our scores for the oracle's calls (`CALLS` in tools/pysaliency_oracle.py), (B,) each."""
    pred, target, fix = x["pred"], x["target"], x["fixations"]
    return {
        "kld": S.kld(pred, target, eps=2.2204e-16),  # pysaliency's MIT_KLDiv rounds Matlab's eps; zeros in pred show it
        "cc": S.cc(pred, target),
        "sim": S.sim(pred, target, "tuebingen"),
        "nss": S.nss(pred, fix, "tuebingen"),
        "auc_tuebingen": S.auc_judd(pred, fix, "tuebingen"),
        # judd=1 with the unfixated pixels as negatives is MIT AUC-Judd; on distinct values, as MIT jitters ties
        "auc_mit": S.auc_judd(x["distinct"], fix, "mit"),
        "sauc": S.shuffled_auc(pred, fix, x["other"]),
    }


def test_oracle_file_records_how_it_was_made() -> None:
    record = json.loads(ORACLE.with_suffix(".json").read_text())
    assert set(record["scores"]) == set(CALLS) == set(record["calls"])
    assert record["produced_by"]["packages"]["pysaliency"] and record["produced_by"]["setup"]
    x = _oracle_inputs()
    assert all(v.shape == tuple(record["shape"]) for v in x.values())
    assert torch.equal(S.other_image_fixations(x["fixations"]), x["other"])  # the oracle's negatives are ours


@pytest.mark.parametrize("metric", sorted(CALLS))
def test_against_vendored_pysaliency(metric: str) -> None:
    expected = json.loads(ORACLE.with_suffix(".json").read_text())["scores"][metric]
    ours = _ours(_oracle_inputs())[metric]
    assert ours.tolist() == pytest.approx(expected, rel=1e-12, abs=0)


def test_against_live_pysaliency() -> None:
    """Optional: where pysaliency imports, it must still give the vendored scores on the vendored inputs."""
    pytest.importorskip("pysaliency", reason="pysaliency not importable here; the vendored scores were checked")
    vendored = json.loads(ORACLE.with_suffix(".json").read_text())["scores"]
    live = low_level_scores({k: v.numpy() for k, v in _oracle_inputs().items()})
    for metric, values in live.items():
        assert values == pytest.approx(vendored[metric], rel=1e-12, abs=0), metric
