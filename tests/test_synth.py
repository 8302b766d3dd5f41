"""SynthSal: deterministic bytes, disjoint class families, informative ground truth, the spurious protocol."""

from __future__ import annotations

import filecmp
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from ser_cli.config import SynthConfig
from ser_cli.data.synth import SynthSal, class_family, fixation_map
from tests.conftest import make_synth

CFG = SynthConfig(height=48, width=72, n_classes=6, train_per_class=4, test_per_class=2)


def test_same_parameters_give_byte_identical_files(tmp_path: Path) -> None:
    a = make_synth(tmp_path / "a.h5")
    b = make_synth(tmp_path / "b.h5")
    assert filecmp.cmp(a, b, shallow=False)
    c = make_synth(tmp_path / "c.h5", seed=1)
    assert not filecmp.cmp(a, c, shallow=False)


def test_pretrain_classes_are_disjoint_from_continual_classes() -> None:
    cont = {c.name for c in class_family("continual", 96)}
    pre = {c.name for c in class_family("pretrain", 96)}
    assert len(cont) == len(pre) == 96 and not cont & pre


def test_labels_and_sizes(tiny_synth: Path) -> None:
    with h5py.File(tiny_synth) as h5:
        assert h5["train/images"].shape == (24, 32, 48, 3) and h5["train/images"].dtype == np.uint8
        assert h5["train/images"].chunks == (1, 32, 48, 3)
        assert np.bincount(h5["train/labels"][:]).tolist() == [6, 6, 6, 6]
        assert np.bincount(h5["test/labels"][:]).tolist() == [3, 3, 3, 3]
        ptr = h5["train/fixation_ptr"][:]
        assert ptr[-1] == len(h5["train/fixations"]) and np.all(np.diff(ptr) > 0)


def _samples(n: int = 24) -> list:
    gen = SynthSal(CFG)
    return [gen.draw("train", row, row % CFG.n_classes) for row in range(n)]


def test_most_map_mass_lies_on_the_object() -> None:
    sigma_px = int(np.ceil(CFG.blur_sigma * CFG.width))
    shares = []
    for s in _samples():
        near_object = binary_dilation(s.target.mask, iterations=sigma_px)  # the blur spreads mass by ~sigma
        shares.append(s.saliency[near_object].sum() / s.saliency.sum())
    assert np.median(shares) > 0.6, shares


def _cc(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


def test_second_observer_agrees_more_than_centre_bias() -> None:
    """Inter-observer consistency: a second, independent draw of fixations predicts the map far better than a
    centre-bias map does (as real fixation datasets report)."""
    gen = SynthSal(CFG)
    yy, xx = np.mgrid[0 : CFG.height, 0 : CFG.width]
    dy, dx = (yy - CFG.height / 2) / (0.25 * CFG.height), (xx - CFG.width / 2) / (0.25 * CFG.width)
    centre = np.exp(-(dy**2 + dx**2))
    observer, baseline = [], []
    for row, s in enumerate(_samples()):
        again = gen.fixations(np.random.default_rng([99, row]), s.target, s.distractors)
        observer.append(_cc(fixation_map(again, CFG), s.saliency))
        baseline.append(_cc(centre, s.saliency))
    assert np.mean(observer) > 0.6
    assert np.mean(observer) > np.mean(baseline) + 0.3, (np.mean(observer), np.mean(baseline))


def test_spurious_brightens_train_images_of_class_c_by_5_times_c_plus_1(tmp_path: Path) -> None:
    plain = make_synth(tmp_path / "plain.h5")
    spur = make_synth(tmp_path / "spur.h5", spurious=True)
    with h5py.File(plain) as p, h5py.File(spur) as s:
        labels = p["train/labels"][:]
        expected = np.clip(p["train/images"][:].astype(int) + 5 * (labels[:, None, None, None] + 1), 0, 255)
        assert np.array_equal(s["train/images"][:], expected)
        assert np.array_equal(s["test/images"][:], p["test/images"][:])  # test images untouched


def test_classes_differ_in_look() -> None:
    classes = class_family("continual", 20)
    looks = {(c.shape, c.texture, c.palette) for c in classes}
    assert len(looks) == 20


def test_too_many_classes_is_an_error() -> None:
    with pytest.raises(ValueError, match="n_classes must be <="):
        class_family("continual", 500)
