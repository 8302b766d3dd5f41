"""`ser pretrain-saliency`: outputs, learning, optimiser groups, kill -9 resume, `--init-from`, determinism.

All runs use the tiny pretraining file of conftest (24 train images, 32x48) for two epochs of 6 steps on the CPU.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ser_cli.cli.app import app
from ser_cli.config import SaliencyConfig
from ser_cli.data.dataset import SplitDataset
from ser_cli.data.store import DataFile
from ser_cli.data.writer import StoreWriter
from ser_cli.metrics.saliency import cc, center_bias_map, kld
from ser_cli.models import SaliencyNet, build_backbone
from ser_cli.models.normalize import Normalizer
from ser_cli.runs.saliency_file import file_sha256, load_saliency_checkpoint
from ser_cli.saliency.encoder_init import load_classifier_encoder
from ser_cli.saliency.saliency_trainer import (
    build_optimizer,
    epoch_order,
    evaluate_maps,
    holdout_split,
    make_loader,
    net_predictor,
    recompute_bn_stats,
    set_epoch_lr,
)
from stages import pretrain_saliency as stage

runner = CliRunner()
TINY = {"epochs": 2, "batch_size": 4, "checkpoint_every": 2, "lr": 0.05}
TINY_SET = [f"saliency.{k}={v}" for k, v in TINY.items()]
METRIC_KEYS = {"kld", "cc", "sim", "nss", "auc_judd"}


def _one_line_error(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def trained(tiny_synth_pretrain: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One complete in-process run (2 epochs), shared by the checks on its outputs."""
    out = tmp_path_factory.mktemp("pretrain") / "run"
    stage.run(SaliencyConfig(**TINY), tiny_synth_pretrain, out, "cpu")
    return out


def test_outputs_have_the_contract_keys_and_finite_numbers(trained: Path) -> None:
    assert sorted(p.name for p in trained.iterdir()) == [".ser-output.json", "headline.json", "metrics.json",
                                                         "model.pt", "predictions.png", "train_log.csv"]  # no ckpt
    metrics = json.loads((trained / "metrics.json").read_text())
    expected = METRIC_KEYS | {f"center_bias_{k}" for k in METRIC_KEYS} | {"train_seconds", "epochs",
                                                                          "train_images", "val_images"}
    assert set(metrics) == expected
    assert all(math.isfinite(v) for v in metrics.values())
    assert (metrics["epochs"], metrics["train_images"], metrics["val_images"]) == (2, 22, 2)
    with open(trained / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(math.isfinite(float(r[k])) for r in rows for k in ("loss", "val_cc", "seconds"))
    assert (trained / "predictions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metrics_are_those_of_the_saved_model_on_the_held_out_rows(trained: Path, tiny_synth_pretrain: Path) -> None:
    """Recompute metrics.json independently from model.pt and the recorded validation rows."""
    net, payload = load_saliency_checkpoint(trained / "model.pt")
    metrics = json.loads((trained / "metrics.json").read_text())
    assert payload["data_fingerprint"] == DataFile(tiny_synth_pretrain).fingerprint
    timeless = {k: v for k, v in metrics.items() if k != "train_seconds"}  # the wall clock only in metrics.json
    assert payload["meta"]["metrics"] == timeless and payload["meta"]["params"]["epochs"] == 2
    assert payload["meta"]["input"] == {"height": 32, "width": 48, "scale": "x / 255",  # precompute warns on others
                                        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    val_rows = np.array(payload["meta"]["val_rows"])
    assert np.array_equal(val_rows, holdout_split(24, 0.1, 0)[1])
    ds = SplitDataset(tiny_synth_pretrain, "train")
    images = torch.stack([ds[int(r)][0] for r in val_rows])
    targets = torch.stack([ds[int(r)][1] for r in val_rows])
    with torch.no_grad():
        pred = net(Normalizer("cpu")(images))[0][:, 0]
    assert metrics["cc"] == pytest.approx(cc(pred, targets).mean().item(), abs=1e-5)
    assert metrics["kld"] == pytest.approx(kld(pred, targets).mean().item(), abs=1e-5)
    bias = center_bias_map(32, 48).expand_as(targets)
    assert metrics["center_bias_cc"] == pytest.approx(cc(bias, targets).mean().item(), abs=1e-6)


def test_training_lowers_the_kld_on_train_data(trained: Path, tiny_synth_pretrain: Path) -> None:
    """The trained network fits its own training images much better than the same network untrained."""
    torch.manual_seed(0)
    untrained = SaliencyNet("resnet18_reduced")
    trained_net, _ = load_saliency_checkpoint(trained / "model.pt")
    rows = holdout_split(24, 0.1, 0)[0]
    loader = make_loader(SplitDataset(tiny_synth_pretrain, "train"), rows, 8, 0)
    normalize = Normalizer("cpu")
    before = evaluate_maps(net_predictor(untrained, "fp32", torch.device("cpu")), loader, normalize, "cpu")
    after = evaluate_maps(net_predictor(trained_net, "fp32", torch.device("cpu")), loader, normalize, "cpu")
    # Seeded CPU run: 1.345 -> 0.591 KLD and -0.12 -> 0.67 CC (with precise BN; without it the decoder's slow
    # running statistics would leave the eval-mode KLD near 1.25 after 12 steps).
    assert after["kld"] < 0.6 * before["kld"], (before, after)
    assert after["cc"] > before["cc"] + 0.5, (before, after)


def test_optimiser_groups_follow_the_config() -> None:
    cfg = SaliencyConfig(lr=0.2, encoder_lr_factor=0.25, weight_decay_decoder=1e-3, weight_decay_encoder=2e-5,
                         momentum=0.9, lr_decay=0.5)
    net = SaliencyNet("resnet18_reduced")
    opt = build_optimizer(net, cfg)
    groups = {g["name"]: g for g in opt.param_groups}
    assert (groups["decoder"]["lr"], groups["decoder"]["weight_decay"]) == (0.2, 1e-3)
    assert (groups["encoder"]["lr"], groups["encoder"]["weight_decay"]) == (0.05, 2e-5)
    assert all(g["momentum"] == 0.9 for g in opt.param_groups)
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    assert ids["encoder"] == {id(p) for p in net.encoder.parameters()}
    assert ids["decoder"] == {id(p) for p in net.decoder.parameters()}
    assert len(ids["encoder"] | ids["decoder"]) == len(list(net.parameters()))
    set_epoch_lr(opt, cfg, 2)  # exponential decay: lr * 0.5 ** 2
    assert (groups["decoder"]["lr"], groups["encoder"]["lr"]) == (0.05, 0.0125)
    # The first SGD step moves each parameter by -lr * (grad + weight_decay * p) (momentum buffer = that gradient).
    enc, dec = net.encoder.blocks[0][0].weight, net.decoder.adaptation.weight
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    before = enc.detach().clone(), dec.detach().clone()
    opt.step()
    torch.testing.assert_close(enc.detach(), before[0] - 0.0125 * (1 + 2e-5 * before[0]))
    torch.testing.assert_close(dec.detach(), before[1] - 0.05 * (1 + 1e-3 * before[1]))


def test_precise_bn_sets_running_stats_to_the_batch_statistics() -> None:
    """One batch, momentum None: running mean / var become that batch's channel mean / unbiased variance."""
    torch.manual_seed(0)
    net = SaliencyNet("resnet18_reduced")
    x = torch.randn(6, 3, 16, 24)
    recompute_bn_stats(net, [x])
    stem_conv, stem_bn = net.encoder.blocks[0][0], net.encoder.blocks[0][1]
    with torch.no_grad():
        pre = stem_conv(x)  # (6, 20, 16, 24), the stem BN's input
    torch.testing.assert_close(stem_bn.running_mean, pre.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(stem_bn.running_var, pre.var(dim=(0, 2, 3), unbiased=True))
    assert stem_bn.momentum == 0.1 and net.decoder.mid.conv[1].momentum == 0.01  # momenta restored
    assert not net.training and not any(m.training for m in net.modules())


def test_holdout_and_data_order_depend_only_on_the_seed() -> None:
    train, val = holdout_split(100, 0.1, seed=3)
    assert len(val) == 10 and np.array_equal(np.sort(np.concatenate([train, val])), np.arange(100))
    assert np.array_equal(val, holdout_split(100, 0.1, seed=3)[1])
    assert not np.array_equal(val, holdout_split(100, 0.1, seed=4)[1])
    assert np.array_equal(epoch_order(train, 3, 1), epoch_order(train, 3, 1))
    assert not np.array_equal(epoch_order(train, 3, 1), epoch_order(train, 3, 2))
    assert np.array_equal(np.sort(epoch_order(train, 3, 1)), train)


def _cli(data: Path, out: Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "ser_cli", "--quiet", "pretrain-saliency", "--data", str(data), "--out", str(out),
            "--device", "cpu", *[x for s in TINY_SET for x in ("--set", s)]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_same_seed_gives_identical_weights(trained: Path, tiny_synth_pretrain: Path, tmp_path: Path) -> None:
    stage.run(SaliencyConfig(**TINY), tiny_synth_pretrain, tmp_path / "again", "cpu")
    reference, again = _weights(trained / "model.pt"), _weights(tmp_path / "again" / "model.pt")
    assert all(torch.equal(reference[k], again[k]) for k in reference)


def test_same_seed_gives_the_same_model_file(trained: Path, tiny_synth_pretrain: Path, tmp_path: Path) -> None:
    # byte for byte: the sha256 of model.pt is what maps files, runs and `ser compare` groups identify it by
    stage.run(SaliencyConfig(**TINY), tiny_synth_pretrain, tmp_path / "again", "cpu")
    assert file_sha256(tmp_path / "again" / "model.pt") == file_sha256(trained / "model.pt")


def test_checkpoint_of_other_settings_is_refused(tmp_path: Path) -> None:
    from ser_cli.runtime.checkpoint import load_resumable, save_checkpoint
    from ser_cli.runtime.errors import UserError

    identity = {"params": SaliencyConfig(**TINY).model_dump(mode="json", exclude=stage.RESUMABLE_KEYS),
                "data_fingerprint": "abc"}
    state = {"identity": identity, "trainer": {}, "rng": {}, "elapsed": 0.0}
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    assert load_resumable(tmp_path / "checkpoint.pt", identity, stage.RESUME_KEYS) == state
    changed = {**identity, "params": {**identity["params"], "lr": 0.01}}
    with pytest.raises(UserError, match=r"checkpoint\.pt: left by an interrupted run with another params\.lr "
                                        r"\(0\.05, now 0\.01\); .* --restart"):
        load_resumable(tmp_path / "checkpoint.pt", changed, stage.RESUME_KEYS)
    assert load_resumable(tmp_path / "checkpoint.pt", changed, stage.RESUME_KEYS, restart=True) is None
    assert not (tmp_path / "checkpoint.pt").exists()


def _classifier_state(name: str, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = build_backbone(name, num_classes=7)
    for p in net.parameters():
        p.data.normal_(0.0, 0.1)  # far from any default init, so equality proves the copy
    return net.state_dict()


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "learner", "module_prefix"])
def test_init_from_loads_the_encoder_weights(tmp_path: Path, wrap: str) -> None:
    state = _classifier_state("resnet18_reduced", seed=5)
    payload = {"plain": state, "state_dict": {"state_dict": state, "epoch": 3}, "model": {"model": state},
               "learner": {"model": {"classifier": state, "saliency": {"x": torch.ones(1)}}},
               "module_prefix": {f"module.{k}": v for k, v in state.items()}}[wrap]
    torch.save(payload, tmp_path / "clf.pt")
    net = SaliencyNet("resnet18_reduced")
    n = load_classifier_encoder(net.encoder, tmp_path / "clf.pt")
    loaded = net.encoder.state_dict()
    assert n == len(loaded) and "head.weight" in state and "head.weight" not in loaded
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)


def test_init_from_through_the_command(tiny_synth_pretrain: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """With a vanishing learning rate the trained encoder's convolutions are still the file's."""
    monkeypatch.chdir(tmp_path)
    state = _classifier_state("resnet18_reduced", seed=6)
    torch.save({"model": state}, tmp_path / "clf.pt")
    result = runner.invoke(app, ["-q", "pretrain-saliency", "--data", str(tiny_synth_pretrain), "--out", "run",
                                 "--init-from", "clf.pt", "--set", "saliency.epochs=1", "--set", "saliency.lr=1e-12",
                                 "--set", "saliency.batch_size=8", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model"] == "run/model.pt"
    payload = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert payload["meta"]["init_from_sha256"] == file_sha256(tmp_path / "clf.pt")
    weights = payload["state_dict"]
    convs = [k for k in state if k.endswith("weight") and state[k].dim() == 4]
    assert len(convs) == 20
    assert all(torch.allclose(weights[f"encoder.{k}"], state[k], atol=1e-6) for k in convs)


def test_init_from_a_mismatching_file_exits_2_naming_the_key(tiny_synth_pretrain: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    torch.save(build_backbone("resnet18", num_classes=10).state_dict(), tmp_path / "wide.pt")
    result = runner.invoke(app, ["pretrain-saliency", "--data", str(tiny_synth_pretrain), "--out", "run",
                                 "--init-from", "wide.pt"])
    assert result.exit_code == 2
    line = _one_line_error(result)
    assert "wide.pt" in line and "'blocks.0.0.weight'" in line and "(20, 3, 3, 3)" in line
    assert not (tmp_path / "run" / "model.pt").exists()


def test_init_from_missing_keys_is_a_user_error(tmp_path: Path) -> None:
    from ser_cli.runtime.errors import UserError

    state = _classifier_state("resnet18_reduced", seed=1)
    del state["blocks.3.units.1.conv2.weight"]
    torch.save(state, tmp_path / "cut.pt")
    with pytest.raises(UserError, match=r"cut\.pt: missing backbone key 'blocks\.3\.units\.1\.conv2\.weight'"):
        load_classifier_encoder(SaliencyNet("resnet18_reduced").encoder, tmp_path / "cut.pt")


def test_data_without_maps_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    writer = StoreWriter(tmp_path / "nomaps.h5", height=16, width=24, class_names=["a", "b"], provenance={})
    for split in ("train", "test"):
        writer.create_split(split, 4)
        writer.write_rows(split, np.arange(4), np.zeros((4, 16, 24, 3), np.uint8), np.array([0, 1, 0, 1]))
    writer.finalize()
    result = runner.invoke(app, ["pretrain-saliency", "--data", "nomaps.h5", "--out", "run"])
    assert result.exit_code == 2
    assert "nomaps.h5: the train split has no saliency maps" in _one_line_error(result)
    assert not (tmp_path / "run").exists()
