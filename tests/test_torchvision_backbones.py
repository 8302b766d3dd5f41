"""torchvision CNNs as SER backbones (`ser_cli.models.torchvision_backbones`): the five taps against torchvision's
own feature extraction on an independently built model, the plain forward against torchvision's, one SER step
whose modulation is checked with hooks at the five points, and torchvision weights files. Tiny inputs, CPU."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models.feature_extraction import create_feature_extractor

from ser_cli.continual.learner import build_learner
from ser_cli.continual.methods import StreamBatch, build_method
from ser_cli.models import backbone_names, build_backbone, load_torchvision_weights
from ser_cli.models.graph_split import split_at_taps
from ser_cli.models.torchvision_backbones import TORCHVISION_SPECS
from ser_cli.runtime.errors import UserError
from tests.continual_data import tiny_settings

TORCHVISION = sorted(TORCHVISION_SPECS)
# Written out here, not read from the code under test: the activation each architecture applies after its taps.
ACTIVATION = {"resnet18": F.relu, "resnet18_reduced": F.relu, "resnet50": F.relu, "mobilenet_v2": F.relu6,
              "efficientnet_b0": F.silu}
X = torch.randn(2, 3, 32, 48, generator=torch.Generator().manual_seed(0))


def _randomise_bn(model: nn.Module) -> None:
    """Non-trivial BN statistics, so eval-mode comparisons are not of identities."""
    generator = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=generator) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=generator) + 0.5)


def _torchvision_pair(name: str, path: Path) -> tuple[nn.Module, nn.Module]:
    """A torchvision model with random BN statistics, saved to `path` and loaded into our backbone; both eval."""
    torch.manual_seed(2)
    theirs = getattr(torchvision.models, name)(num_classes=10)
    _randomise_bn(theirs)
    for m in theirs.modules():  # in-place ReLUs would overwrite the pre-activation outputs read below
        if hasattr(m, "inplace"):
            m.inplace = False
    torch.save(theirs.state_dict(), path)
    ours = build_backbone(name, num_classes=10)
    assert load_torchvision_weights(ours, path, "train.backbone_weights") > 0
    head = TORCHVISION_SPECS[name].head
    ours.head.load_state_dict(theirs.get_submodule(head).state_dict())
    return ours.eval(), theirs.eval()


def _reference_taps(model: nn.Module, nodes: list[str], x: Tensor) -> list[Tensor]:
    """The named nodes' outputs: forward hooks for modules (inside torchvision.ops blocks, which
    `create_feature_extractor` does not trace into), `create_feature_extractor` for functions (residual sums)."""
    out: dict[str, Tensor] = {}
    modules = dict(model.named_modules())
    hooks = [modules[n].register_forward_hook(lambda m, a, y, n=n: out.__setitem__(n, y.clone()))
             for n in nodes if n in modules]
    functions = [n for n in nodes if n not in modules]
    with torch.no_grad():
        model(x)
        if functions:
            out.update(create_feature_extractor(model, return_nodes=functions)(x))
    for hook in hooks:
        hook.remove()
    return [out[n] for n in nodes]


@pytest.mark.parametrize("name", TORCHVISION)
def test_taps_are_torchvisions_named_nodes(name: str, tmp_path: Path) -> None:
    ours, theirs = _torchvision_pair(name, tmp_path / "w.pth")
    nodes = [node for node, _ in TORCHVISION_SPECS[name].taps]
    with torch.no_grad():
        taps = ours.features(X)
    for node, got, want in zip(nodes, taps, _reference_taps(theirs, nodes, X), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6, msg=node)
        assert (got < 0).any(), f"{node} is after an activation"  # pre-activation: negative values survive
    assert [t.shape[1] for t in taps] == ours.tap_channels
    assert [t.shape[-1] for t in taps] == [24, 12, 6, 3, 2]  # /2, /4, /8, /16, /32 of 48


@pytest.mark.parametrize("name", TORCHVISION)
def test_plain_forward_is_torchvisions(name: str, tmp_path: Path) -> None:
    ours, theirs = _torchvision_pair(name, tmp_path / "w.pth")
    with torch.no_grad():
        pooled = create_feature_extractor(theirs, return_nodes=["flatten"])(X)["flatten"]
        torch.testing.assert_close(ours.embed(X), pooled, rtol=0, atol=1e-6)
        torch.testing.assert_close(ours(X), theirs(X), rtol=0, atol=1e-5)
    # The blocks hold torchvision's modules: one set of weights, nothing copied.
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())


def test_cuts_that_would_not_compute_the_network_are_refused() -> None:
    model = torchvision.models.mobilenet_v2()
    # Inside a residual block: the block after the cut would also need the block's input for the sum.
    with pytest.raises(ValueError, match="^'features.18.1' needs 'features.2.conv.3' from before the cut at "
                                         "'features.3.conv.0.2': more than one tensor would cross the cut$"):
        split_at_taps(model, ["features.0.1", "features.3.conv.0.1", "features.18.1"])
    with pytest.raises(ValueError, match="^tap 'features.0.0' must feed one activation module"):
        split_at_taps(model, ["features.0.0", "features.18.1"])  # the conv before the BN: no activation follows
    with pytest.raises(ValueError, match="^MobileNetV2 has no node 'nope'$"):
        split_at_taps(model, ["nope"])


def _capture_points(classifier: nn.Module) -> tuple[dict, list]:
    """Each block's output (the pre-activation tap) and what the next block, or the head as a mean, receives."""
    pre, received, handles = {}, {}, []
    for i, block in enumerate(classifier.blocks):
        handles.append(block.register_forward_hook(lambda m, a, out, i=i: pre.__setitem__(i, out.detach())))
        handles.append(block.register_forward_pre_hook(lambda m, a, i=i: received.__setitem__(i - 1, a[0].detach())))
    handles.append(classifier.head.register_forward_pre_hook(lambda m, a: received.__setitem__(4, a[0].detach())))
    return {"pre": pre, "received": received}, handles


def _batch(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """n random uint8 32x48 images, saliency maps summing to 1, labels of the first two classes."""
    images = torch.randint(0, 256, (n, 3, 32, 48), dtype=torch.uint8, generator=generator)
    maps = torch.rand(n, 32, 48, generator=generator) + 0.01
    return images, maps / maps.sum(dim=(1, 2), keepdim=True), torch.randint(0, 2, (n,), generator=generator)


@pytest.mark.parametrize("name", backbone_names())
def test_one_ser_step_and_the_modulation_multiplies_at_the_five_points(name: str) -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    settings = tiny_settings(backbone=name, ser=True, mnp="multiply", batch_size=2, minibatch_size=2)
    method = build_method("derpp", build_learner(settings, "cpu"), settings, (3, 32, 48))
    learner = method.learner
    images, _, labels = _batch(8, generator)
    method.buffer.add(images, labels, task=0, logits=torch.randn(8, settings.n_classes))
    images, maps, labels = _batch(2, generator)
    before = [p.detach().clone() for p in learner.parameters()]
    sal_before = [p.detach().clone() for p in learner.saliency.net.parameters()]
    losses = method.observe(StreamBatch(images, maps, labels))
    assert {"replay_mse", "replay_ce", "saliency_kld"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, learner.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(sal_before, learner.saliency.net.parameters(), strict=True))

    # The modulation at each point: the next block receives act_i(c_i * s_i), s_i the saliency encoder's tap.
    x = learner.normalize(images)
    with torch.no_grad():
        s = copy.deepcopy(learner.saliency.net).eval().encoder.features(x)
    seen, handles = _capture_points(learner.classifier)
    learner.logits(x, "replay")
    for h in handles:
        h.remove()
    act = ACTIVATION[name]
    for i in range(5):
        c, got = seen["pre"][i], seen["received"][i]
        expected = act(c * s[i]) if i < 4 else act(c * s[i]).mean(dim=(2, 3))
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6, msg=f"point {i}")
        plain = act(c) if i < 4 else act(c).mean(dim=(2, 3))
        assert not torch.allclose(got, plain), f"point {i}"  # the saliency taps really act


def test_weights_file_round_trips_and_bad_files_are_one_line(tmp_path: Path) -> None:
    torch.manual_seed(3)
    theirs = torchvision.models.mobilenet_v2(num_classes=7)
    _randomise_bn(theirs)
    torch.save(theirs.state_dict(), tmp_path / "mnv2.pth")
    ours = build_backbone("mobilenet_v2", num_classes=10)
    head = ours.head.weight.detach().clone()
    assert load_torchvision_weights(ours, tmp_path / "mnv2.pth", "train.backbone_weights") == 312
    mine = ours.state_dict()
    for key, mapped in ours.torchvision_keys.items():
        assert torch.equal(mine[mapped], theirs.state_dict()[key]), key
    assert torch.equal(ours.head.weight, head)  # the classifier (7 classes there) is not taken

    torch.save(torchvision.models.efficientnet_b0().state_dict(), tmp_path / "effnet.pth")
    (tmp_path / "junk.pth").write_text("not torch")
    torch.save({"step": 3}, tmp_path / "dict.pth")
    cases = {
        "effnet.pth": "train.backbone_weights {}: missing key 'features.1.conv.0.0.weight' (weights of another "
                      "architecture?)",
        "junk.pth": "train.backbone_weights {}: not a readable torch weights file (UnpicklingError)",
        "dict.pth": "train.backbone_weights {}: expected a torchvision state dict (name -> tensor), got dict",
        "none.pth": "train.backbone_weights {}: file not found",
    }
    for file, message in cases.items():
        with pytest.raises(UserError) as err:
            load_torchvision_weights(ours, tmp_path / file, "train.backbone_weights")
        assert str(err.value) == message.format(tmp_path / file)
    with pytest.raises(UserError, match=r"^saliency.backbone_weights: torchvision weights fit only the torchvision "
                                        r"backbones \(efficientnet_b0, mobilenet_v2, resnet50\), not ser's own"):
        load_torchvision_weights(build_backbone("resnet18_reduced", 4), tmp_path / "mnv2.pth",
                                 "saliency.backbone_weights")


@pytest.mark.slow
def test_pretrain_precompute_train_evaluate_with_mobilenet_v2_from_torchvision_weights(tmp_path: Path) -> None:
    """The four commands end to end on a torchvision backbone, encoder and classifier started from one weights file."""
    import json

    from typer.testing import CliRunner

    from ser_cli.cli.app import app
    from ser_cli.runs.saliency_file import file_sha256
    from tests.conftest import make_synth

    data = make_synth(tmp_path / "d.h5", n_classes=4, train_per_class=4, test_per_class=2)
    torch.manual_seed(4)
    torch.save(torchvision.models.mobilenet_v2().state_dict(), tmp_path / "mnv2.pth")
    sha = file_sha256(tmp_path / "mnv2.pth")
    common = ["--device", "cpu", "--set", "saliency.backbone=mobilenet_v2", "--set", "train.backbone=mobilenet_v2"]
    commands = {
        "pretrain": ["pretrain-saliency", "--data", str(data), "--out", "sal", "--set", "saliency.epochs=1",
                     "--set", "saliency.batch_size=4", "--set", "saliency.precise_bn_batches=1",
                     "--set", "saliency.backbone_weights=mnv2.pth"],
        "precompute": ["precompute", "--model", "sal/model.pt", "--data", str(data), "--out", "maps.h5"],
        "train": ["train", "--data", str(data), "--maps", "maps.h5", "--out", "run", "--method", "derpp", "--ser",
                  "--set", "train.saliency_checkpoint=sal/model.pt", "--set", "train.backbone_weights=mnv2.pth",
                  "--set", "train.n_tasks=2", "--set", "train.classes_per_task=2", "--set", "train.buffer_size=8",
                  "--set", "train.batch_size=4", "--set", "train.minibatch_size=4",
                  # the branch's own weights made these maps (degenerate SER): here only the plumbing is under test
                  "--set", "train.allow_self_targets=true"],
        "evaluate": ["evaluate", "--run", "run", "--data", str(data), "--maps", "maps.h5", "--out", "eval",
                     "--set", "evaluate.epsilons=[2/255]", "--set", "evaluate.pgd_steps=1",
                     "--set", "evaluate.attack_images=4"],
    }
    runner = CliRunner()
    for name, args in commands.items():
        result = runner.invoke(app, ["-q", *args, *common])
        assert result.exit_code == 0, f"{name}: {result.output}"
    meta = torch.load("sal/model.pt", weights_only=True)["meta"]
    assert meta["backbone_weights_sha256"] == sha and meta["params"]["backbone"] == "mobilenet_v2"
    run = json.loads(Path("run/run.json").read_text())
    assert run["identity"]["classifier_init"] == sha  # the run's identity names the weights file
    train_m, eval_m = (json.loads(Path(f"{d}/metrics.json").read_text()) for d in ("run", "eval"))
    assert eval_m["class_il_final_avg_acc"] == pytest.approx(train_m["class_il_final_avg_acc"])
    assert "pgd_acc_eps_2" in eval_m
    both = runner.invoke(app, ["-q", *commands["pretrain"], "--set", "saliency.init_from=mnv2.pth", *common])
    assert both.exit_code == 2 and "set only one" in both.output
