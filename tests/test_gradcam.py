"""Grad-CAM and where the classifier looks: closed forms, object masks in SynthSal, `ser evaluate`'s attention metrics.

Grad-CAM (Selvaraju et al., ICCV 2017) at a map A that is average-pooled into a linear head has a closed form:
d logit_y / d A^k(i, j) = W[y, k] / (h w) everywhere, so alpha_k = W[y, k] / (h w) and Grad-CAM =
ReLU(sum_k W[y, k] A^k) / (h w) (the CAM of Zhou et al., CVPR 2016). The references below compute A by running the
blocks by hand and upsample with a numpy bilinear interpolation (half-pixel centres), independently of the code.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ser_cli.config import EvaluateConfig, SynthConfig
from ser_cli.continual.learner import build_learner
from ser_cli.data.fingerprint import data_fingerprint
from ser_cli.data.store import DataFile
from ser_cli.data.synth import SynthSal, split_labels
from ser_cli.data.writer import StoreWriter
from ser_cli.metrics.attribution import grad_cam, mass_inside, pooled_map_capture
from ser_cli.models.registry import Backbone
from stages import compare, spurious
from stages import evaluate as stage
from tests.conftest import make_synth
from tests.continual_data import tiny_settings
from tests.test_evaluate import MATRIX_2, MEAN, STD, StandInRun

TINY = dict(height=32, width=48, n_classes=4, train_per_class=6, test_per_class=3, seed=0)
# `make_synth`'s file written by the code before object masks existed (commit d3079ee): masks must not change it.
FINGERPRINT_BEFORE_MASKS = "4e2354331f3ae0b5c81aa844ba1d0c5a754c38ffbae8114c570e43a35ce1e423"


class ConvGap(Backbone):
    """One 3x3 stride-2 convolution, (modulated) ReLU, global average pooling, linear head."""

    def __init__(self, channels: int = 4, num_classes: int = 3) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Conv2d(3, channels, 3, stride=2, padding=1)])
        self.tap_channels = [channels]
        self.head = nn.Linear(channels, num_classes)
        self.num_classes = num_classes


def _bilinear(m: np.ndarray, h: int, w: int) -> np.ndarray:
    """Upsample (h0, w0) to (h, w), half-pixel centres clamped at the border (align_corners=False)."""

    def weights(n_in: int, n_out: int) -> np.ndarray:
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0)
        i0 = np.floor(src).astype(int)
        i1, frac = np.minimum(i0 + 1, n_in - 1), src - i0
        out = np.zeros((n_out, n_in))
        np.add.at(out, (np.arange(n_out), i0), 1 - frac)
        np.add.at(out, (np.arange(n_out), i1), frac)
        return out

    return weights(m.shape[0], h) @ m @ weights(m.shape[1], w).T


def _cam_reference(A: torch.Tensor, head: nn.Linear, labels: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """ReLU(sum_k W[y, k] A^k) / (h w), upsampled; A (B, C, h, w) computed by hand."""
    A = A.detach().double().numpy()
    W = head.weight.detach().double().numpy()[labels.numpy()]  # (B, C)
    cams = np.maximum(np.einsum("bchw,bc->bhw", A, W), 0) / (A.shape[2] * A.shape[3])
    return np.stack([_bilinear(c, *size) for c in cams])


def test_grad_cam_of_conv_gap_linear_is_the_closed_form() -> None:
    torch.manual_seed(0)
    net = ConvGap()
    x01, labels = torch.rand(5, 3, 8, 12), torch.tensor([0, 1, 2, 1, 0])
    cam = grad_cam(net, net, x01, labels)
    A = F.relu(F.conv2d(x01, net.blocks[0].weight, net.blocks[0].bias, stride=2, padding=1))  # (5, 4, 4, 6)
    assert cam.shape == (5, 8, 12)
    np.testing.assert_allclose(cam.double().numpy(), _cam_reference(A, net.head, labels, (8, 12)), atol=1e-6)
    assert cam.abs().sum() > 0 and not net._forward_pre_hooks  # non-trivial, and the hook is gone


def test_grad_cam_sees_the_modulated_map_positional_or_keyword() -> None:
    """A = the map the head pools: with SER, ReLU(c * s), so where the saliency map is 0 the Grad-CAM is 0."""
    torch.manual_seed(1)
    net = ConvGap()
    x01, labels = torch.rand(3, 3, 8, 12), torch.tensor([2, 0, 1])
    s = torch.zeros(3, 4, 4, 6)
    s[:, :, :2] = 3.0  # saliency only in the top half of the 4x6 map

    def modulate(i: int, c: torch.Tensor) -> torch.Tensor:
        return F.relu(c * s)

    A = modulate(0, F.conv2d(x01, net.blocks[0].weight, net.blocks[0].bias, stride=2, padding=1))
    expected = _cam_reference(A, net.head, labels, (8, 12))
    for logits_fn in (lambda x: net(x, modulate=modulate), lambda x: net(x, modulate)):
        cam = grad_cam(logits_fn, net, x01, labels).double().numpy()
        np.testing.assert_allclose(cam, expected, atol=1e-6)
    assert expected[:, -2:].max() == 0 and expected.max() > 0  # the bottom rows got no attention


def test_grad_cam_through_a_real_ser_learner_matches_the_closed_form() -> None:
    """The learner's `eval_logits` (normalisation, saliency taps, modulation at five points, ResNet stages)."""
    torch.manual_seed(2)
    learner = build_learner(tiny_settings(ser=True), "cpu")
    learner.train(False)
    x01, labels = torch.rand(4, 3, 16, 24), torch.tensor([0, 3, 5, 1])
    cam = grad_cam(learner.eval_logits, learner.classifier, x01, labels)
    with torch.no_grad():
        x = learner.normalize.unit(x01)
        taps = learner.saliency.eval_features(x)
        for i, block in enumerate(learner.classifier.blocks):
            x = learner.modulation(i, block(x), taps[i])  # (B, C_i, H_i, W_i)
    np.testing.assert_allclose(cam.double().numpy(), _cam_reference(x, learner.classifier.head, labels, (16, 24)),
                               atol=1e-5)
    assert cam.amax(dim=(1, 2)).gt(0).sum() >= 2  # most images have some attention: the comparison is not 0 == 0


def test_grad_cam_needs_exactly_one_forward_of_the_backbone() -> None:
    net = ConvGap()
    with pytest.raises(RuntimeError, match="2 times"):
        grad_cam(lambda x: net(x) + net(x), net, torch.rand(1, 3, 8, 8), torch.tensor([0]))
    with pooled_map_capture(net) as captured:
        net(torch.rand(2, 3, 8, 8))
    assert len(captured) == 1 and captured[0].shape == (2, 4, 4, 4) and not net._forward_pre_hooks


def test_mass_inside_on_constructed_maps() -> None:
    mask = torch.zeros(3, 6, 8, dtype=torch.bool)
    mask[:, 1:4, 2:6] = True  # 12 of 48 pixels
    inside = torch.rand(6, 8) * mask[0]
    maps = torch.stack([inside, torch.ones(6, 8), torch.zeros(6, 8)])
    share = mass_inside(maps, mask)
    assert share[0] == pytest.approx(1.0) and share[1] == pytest.approx(12 / 48) and torch.isnan(share[2])


def test_synthsal_masks_are_the_objects(tmp_path: Path) -> None:
    path = make_synth(tmp_path / "s.h5")
    gen = SynthSal(SynthConfig(**TINY))
    with h5py.File(path, "r") as h5:
        masks, images, labels = h5["test"]["masks"][:], h5["test"]["images"][:], h5["test"]["labels"][:]
    assert masks.dtype == np.uint8 and masks.shape == images.shape[:3] and set(np.unique(masks)) == {0, 1}
    for row, label in enumerate(labels):
        assert np.array_equal(masks[row] > 0, gen.draw("test", row, int(label)).target.mask)
        if gen.classes[label].texture == "solid":  # the object is drawn last, in one colour: its pixels all have it
            assert len(np.unique(images[row][masks[row] > 0], axis=0)) == 1
    solid = [r for r, y in enumerate(labels) if gen.classes[y].texture == "solid"]
    assert solid, "the tiny file should hold a solid-texture class"
    # a larger object scale gives larger masks, image by image (same random draws, scaled radius)
    small, large = (SynthSal(SynthConfig(**TINY, object_scale=s)) for s in ((0.15, 0.2), (0.3, 0.35)))
    for row, y in enumerate(labels):
        assert small.draw("test", row, int(y)).target.mask.sum() < large.draw("test", row, int(y)).target.mask.sum()


def test_masks_change_neither_the_data_nor_its_fingerprint(tmp_path: Path) -> None:
    with_masks = make_synth(tmp_path / "with.h5")
    without = _write_without_masks(tmp_path / "without.h5")
    assert DataFile(with_masks).fingerprint == DataFile(without).fingerprint == FINGERPRINT_BEFORE_MASKS
    with h5py.File(with_masks, "r") as a, h5py.File(without, "r") as b:
        for split in ("train", "test"):
            assert set(a[split]) - set(b[split]) == {"masks"}
            for name in b[split]:
                assert np.array_equal(a[split][name][:], b[split][name][:]), (split, name)
        assert data_fingerprint(a) == a.attrs["fingerprint"]


def _write_without_masks(path: Path) -> Path:
    """The same generator calls as `ser data synth`, written without masks (the file before masks existed)."""
    cfg = SynthConfig(**TINY)
    gen = SynthSal(cfg)
    writer = StoreWriter(path, height=cfg.height, width=cfg.width, class_names=[c.name for c in gen.classes],
                         provenance={"generator": "synthsal", "params": cfg.model_dump(mode="json")})
    for split in ("train", "test"):
        labels = split_labels(cfg, split)
        writer.create_split(split, len(labels), with_maps=True, with_fixations=True)
        samples = [gen.draw(split, r, int(y)) for r, y in enumerate(labels)]
        writer.write_rows(split, np.arange(len(labels)), np.stack([s.image for s in samples]), labels,
                          np.stack([s.saliency for s in samples]))
        points = [np.column_stack([np.full(len(s.fixations), r, np.int32), s.fixations]) for r, s in enumerate(samples)]
        ptr = np.concatenate([[0], np.cumsum([len(p) for p in points])]).astype(np.int64)
        writer.write_fixations(split, np.concatenate(points), ptr)
    return writer.finalize()


def test_spurious_copies_the_masks(tiny_synth: Path, tmp_path: Path) -> None:
    out = spurious.run(tiny_synth, tmp_path / "spur.h5")
    with h5py.File(tiny_synth, "r") as a, h5py.File(out, "r") as b:
        for split in ("train", "test"):
            assert np.array_equal(a[split]["masks"][:], b[split]["masks"][:])
    assert DataFile(out).masks("test", np.array([0, 2])).shape == (2, 32, 48)


FAST = EvaluateConfig(attacks=[], batch_size=5)  # batches of 5 cut across classes and tasks


def test_evaluate_writes_gradcam_and_the_attention_metrics(tiny_synth: Path, tmp_path: Path) -> None:
    run = StandInRun.build(tiny_synth, ser=True, accuracy=MATRIX_2)
    result = stage.run(FAST, run, tiny_synth, tmp_path / "eval", None, "cpu")
    assert (tmp_path / "eval" / "gradcam.png").read_bytes()[:4] == b"\x89PNG"
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert m == result.metrics
    on_object, chance, cc, zero = _attention_reference(run, tiny_synth)
    assert m["gradcam_images"] == 12 and m["gradcam_zero_maps"] == zero < 12  # untrained: some have no evidence
    assert m["attention_on_object"] == pytest.approx(on_object, rel=1e-5)
    assert m["attention_on_object_chance"] == pytest.approx(chance, rel=1e-9)
    assert m["attention_saliency_cc"] == pytest.approx(cc, rel=1e-4)
    report = compare.run([tmp_path / "eval"], tmp_path / "report")
    table = (tmp_path / "report" / "report.md").read_text().split("\n\n")[2]  # the headline table
    assert "| Grad-CAM on object | Grad-CAM CC |" in table and f"| {m['attention_on_object']:.2f} |" in table
    assert report.summary["headline"][-3:] == ["attention_on_object", "attention_saliency_cc", "test_images_per_second"]


def _attention_reference(run: StandInRun, data: Path) -> tuple[float, float, float, int]:
    """Mean share on the object, mean object area and mean CC with the file's maps over the images with a non-zero
    Grad-CAM, from the closed form, and the number of all-zero Grad-CAMs."""
    with h5py.File(data, "r") as h5:
        images, labels = h5["test"]["images"][:], h5["test"]["labels"][:]
        masks, maps = h5["test"]["masks"][:] > 0, h5["test"]["maps"][:].astype(np.float64)
    x01 = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        x = (x01 - MEAN) / STD
        taps = run.nets["saliency"].encoder.features(x)
        for i, block in enumerate(run.classifier.blocks):
            x = run.nets["modulation"](i, block(x), taps[i])
    cams = _cam_reference(x, run.classifier.head, torch.from_numpy(labels), images.shape[1:3])
    alive = cams.max(axis=(1, 2)) > 0
    cams, masks, maps = cams[alive], masks[alive], maps[alive]
    shares = [(c * m).sum() / c.sum() for c, m in zip(cams, masks, strict=True)]
    ccs = [np.corrcoef(c.ravel(), t.ravel())[0, 1] for c, t in zip(cams, maps, strict=True)]
    return float(np.mean(shares)), float(masks.mean()), float(np.mean(ccs)), int((~alive).sum())


def test_a_file_without_masks_has_no_attention_on_object(tiny_synth: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare.h5"
    bare.write_bytes(tiny_synth.read_bytes())
    with h5py.File(bare, "a") as h5:
        for split in ("train", "test"):
            del h5[split]["masks"]
    assert DataFile(bare).masks("test", np.arange(3)) is None and DataFile(bare).fingerprint == DataFile(
        tiny_synth).fingerprint
    run = StandInRun.build(bare, ser=False, accuracy=MATRIX_2)
    m = stage.run(FAST, run, bare, tmp_path / "eval", None, "cpu").metrics
    assert "attention_on_object" not in m and "attention_on_object_chance" not in m
    assert -1 <= m["attention_saliency_cc"] <= 1 and (tmp_path / "eval" / "gradcam.png").is_file()
