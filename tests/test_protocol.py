"""The paper's protocol knobs (issue: baselines start from the saliency encoder) and the SER diagnostics:
`train.classifier_init`, `train.stream_taps`, and the modulation measurements logged during training."""

from __future__ import annotations

import copy
import csv
import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ser_cli.cli.app import app
from ser_cli.continual.learner import build_learner, modulation_diagnostics
from ser_cli.continual.settings import resolve_classifier_init
from ser_cli.models.registry import build_backbone
from ser_cli.models.saliency_net import SaliencyNet
from ser_cli.runs.saliency_file import save_saliency_checkpoint
from ser_cli.runtime.errors import UserError
from ser_cli.saliency.encoder_init import backbone_weights
from tests.continual_data import tiny_settings, tiny_stream

runner = CliRunner()
TINY = ["--set", "train.n_tasks=2", "--set", "train.classes_per_task=2", "--set", "train.buffer_size=16",
        "--set", "train.batch_size=4", "--set", "train.minibatch_size=4"]


@pytest.fixture(scope="module")
def saliency_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(3)
    net = SaliencyNet("resnet18_reduced")
    net.train()  # give BatchNorm running statistics that differ from the fresh defaults
    with torch.no_grad():
        net(torch.randn(8, 3, 32, 48) * 2 + 0.5)
    path = tmp_path_factory.mktemp("sal") / "model.pt"
    save_saliency_checkpoint(path, net, "fp", {})
    return path


def test_auto_follows_the_authors_released_protocol() -> None:
    assert resolve_classifier_init("auto", ser=False, saliency_checkpoint="m.pt") == "saliency"
    assert resolve_classifier_init("auto", ser=False, saliency_checkpoint=None) == "random"
    assert resolve_classifier_init("auto", ser=True, saliency_checkpoint="m.pt") == "random"
    assert resolve_classifier_init("saliency", ser=True, saliency_checkpoint="m.pt") == "saliency"
    assert resolve_classifier_init("runs/clf.pt", ser=False, saliency_checkpoint=None) == "checkpoint"


def test_saliency_init_gives_the_classifier_the_encoders_taps(saliency_ckpt: Path) -> None:
    payload = torch.load(saliency_ckpt, weights_only=True)
    net = SaliencyNet(**payload["config"])
    net.load_state_dict(payload["state_dict"])
    settings = tiny_settings(classifier_init="saliency")
    weights = backbone_weights(build_backbone(settings.backbone, settings.n_classes), net.encoder.state_dict(), "t")
    torch.manual_seed(0)
    learner = build_learner(settings, "cpu", classifier_weights=weights)
    torch.manual_seed(0)
    random_start = build_learner(tiny_settings(), "cpu")
    layout = learner.normalize.memory_format  # the learner's layout (kernels of another one round differently)
    net = net.to(memory_format=layout)
    x = torch.randn(3, 3, 16, 24).contiguous(memory_format=layout)
    learner.classifier.eval(), net.eval(), random_start.classifier.eval()
    with torch.no_grad():
        for got, want, other in zip(learner.classifier.features(x), net.encoder.features(x),
                                    random_start.classifier.features(x), strict=True):
            assert torch.equal(got, want)
            assert not torch.allclose(other, want)  # a random classifier would not pass
        # the head is the seeded random one: the same as a random start's with the same seed
        assert torch.equal(learner.classifier.head.weight, random_start.classifier.head.weight)


def test_a_checkpoint_of_another_backbone_is_one_line(saliency_ckpt: Path, tmp_path: Path) -> None:
    wide = tmp_path / "wide.pt"
    torch.save(build_backbone("resnet18", 4).state_dict(), wide)
    with pytest.raises(UserError, match=r"train.classifier_init .*wide\.pt: shape mismatch at"):
        backbone_weights(build_backbone("resnet18_reduced", 4), torch.load(wide), f"train.classifier_init {wide}")


def _train(data: Path, out: Path, *extra: str):
    return runner.invoke(app, ["-q", "train", "--data", str(data), "--out", str(out), "--device", "cpu", *TINY,
                               *extra])


def test_train_records_the_resolved_init_and_starts_from_the_encoder(tiny_synth: Path, saliency_ckpt: Path,
                                                                     tmp_path: Path) -> None:
    ckpt = ["--set", f"train.saliency_checkpoint={saliency_ckpt}"]
    plain = _train(tiny_synth, tmp_path / "plain", "--method", "er", *ckpt)
    assert plain.exit_code == 0, plain.output
    ser = _train(tiny_synth, tmp_path / "ser", "--method", "er", "--ser", *ckpt)
    assert ser.exit_code == 0, ser.output
    random_plain = _train(tiny_synth, tmp_path / "rand", "--method", "er", *ckpt,
                          "--set", "train.classifier_init=random")
    assert random_plain.exit_code == 0
    runs = {name: json.loads((tmp_path / name / "run.json").read_text()) for name in ("plain", "ser", "rand")}
    assert [runs[n]["classifier_init"] for n in ("plain", "ser", "rand")] == ["saliency", "random", "random"]
    assert runs["plain"]["config_hash"] != runs["rand"]["config_hash"]  # part of the configuration
    # the starting weights changed the run: its first step's loss (the accuracies of a run this tiny can coincide)
    first_losses = [next(csv.DictReader((tmp_path / name / "train_log.csv").open()))["stream_ce"]
                    for name in ("plain", "rand")]
    assert first_losses[0] != first_losses[1]


def test_saliency_init_without_the_checkpoint_file_is_one_line(tiny_synth: Path, tmp_path: Path) -> None:
    result = _train(tiny_synth, tmp_path / "r", "--method", "er", "--set", "train.saliency_checkpoint=nope.pt")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1
    assert "nope.pt not found" in lines[0] and "classifier_init=random" in lines[0]


def test_eval_stream_taps_are_the_eval_mode_features_before_the_update() -> None:
    learner = build_learner(tiny_settings(ser=True, sal_lr=0.5, stream_taps="eval"), "cpu")
    images, maps, labels, _ = next(iter(tiny_stream().train_loader([0], epoch=1)))
    x = learner.normalize(images[:4])
    before = copy.deepcopy(learner.saliency.net).eval()
    train_mode = copy.deepcopy(learner.saliency.net).train()
    learner.saliency_step(x, maps[:4])
    with torch.no_grad():
        expected, train_taps = before.encoder.features(x), train_mode.encoder.features(x)
    for got, want, other in zip(learner._taps(x, "stream"), expected, train_taps, strict=True):
        assert torch.equal(got, want)
        assert not torch.allclose(got, other)  # train-mode BatchNorm gives other features


def test_modulation_diagnostics_closed_form() -> None:
    c = torch.tensor([1.0, 2.0, -1.0, 3.0]).view(1, 4, 1, 1)
    s = torch.tensor([1.0, 0.5, 1.0, -1.0]).view(1, 4, 1, 1)
    out = torch.relu(c * s)  # [1, 1, 0, 0]; plain ReLU(c) = [1, 2, 0, 3]
    d = modulation_diagnostics(2, c, out)
    assert d["mod_norm_ratio_2"].item() == pytest.approx(math.sqrt(2) / math.sqrt(14))
    assert d["mod_zeroed_2"].item() == pytest.approx(1 / 3)  # of the three active units, one is zeroed


def test_diagnostics_are_logged_every_n_steps_and_summarised(tiny_synth: Path, saliency_ckpt: Path,
                                                             tmp_path: Path) -> None:
    result = _train(tiny_synth, tmp_path / "r", "--method", "er", "--ser",
                    "--set", f"train.saliency_checkpoint={saliency_ckpt}", "--set", "train.diagnostics_every=2")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "r" / "train_log.csv").open()))
    logged = [int(r["step"]) for r in rows if r.get("mod_norm_ratio_0")]
    assert logged == [2, 4, 6] and len(rows) == 6  # 24 images / batch 4, measured at every 2nd step
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    for i in range(5):
        values = [float(r[f"mod_norm_ratio_{i}"]) for r in rows if r.get(f"mod_norm_ratio_{i}")]
        assert metrics[f"mod_norm_ratio_{i}_mean"] == pytest.approx(sum(values) / len(values), abs=1e-6)
    assert 0 <= metrics["mod_zeroed_0_mean"] <= 1 and metrics["stream_saliency_kld_mean"] > 0

