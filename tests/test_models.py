"""Tests of `ser_cli.models`: backbones, modulation (MNP) and the saliency network (method.md section 3).

Numbers are checked against closed forms, against torchvision's independent ResNet implementation, and against
step-by-step recomputation from the blocks; everything runs on CPU with tiny inputs except one 288x384 shape check.
"""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from ser_cli.models import (
    SaliencyNet,
    backbone_names,
    build_backbone,
    build_modulation,
    modulation_names,
)
from ser_cli.models.saliency_net import GaussianPriors, Skip
from ser_cli.runtime.errors import UserError

RESNET18_100_PARAMS = 11_220_132
SALIENCY_RESNET18_PARAMS = 12_060_865  # encoder 11,168,832 (no head) + decoder 892,033
SALIENCY_RESNET18_G16_PARAMS = 12_065_201  # + 16 * 9 + 16 * 2 + 16 * 256 in the first IR, + 64 Gaussian params


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def randomise_bn(module: nn.Module) -> None:
    """Non-trivial BN statistics and affine parameters, so eval-mode checks are not identities."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


def torchvision_twin(model: nn.Module, num_classes: int) -> nn.Module:
    """torchvision's ResNet-18 with the continual-learning stem, carrying `model`'s weights."""
    tv = torchvision.models.resnet18(num_classes=num_classes)
    tv.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    tv.maxpool = nn.Identity()
    ours, theirs = model.state_dict(), tv.state_dict()
    assert [v.shape for v in ours.values()] == [v.shape for v in theirs.values()]
    tv.load_state_dict(dict(zip(theirs.keys(), ours.values(), strict=True)))
    return tv.eval()


# ---------------------------------------------------------------------------------------------- backbones


def test_resnet18_parameter_count_matches_torchvision() -> None:
    model = build_backbone("resnet18", num_classes=100)
    assert n_params(model) == RESNET18_100_PARAMS
    assert n_params(torchvision_twin(model, 100)) == RESNET18_100_PARAMS
    assert model.tap_channels == [64, 64, 128, 256, 512]
    assert build_backbone("resnet18_reduced", num_classes=10).tap_channels == [20, 20, 40, 80, 160]


def test_forward_equals_torchvision_on_non_square_input() -> None:
    model = build_backbone("resnet18", num_classes=7).eval()
    randomise_bn(model)
    x = torch.randn(2, 3, 24, 40)
    with torch.no_grad():
        ours, theirs = model(x), torchvision_twin(model, 7)(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_tap_shapes_at_paper_resolution() -> None:
    model = build_backbone("resnet18", num_classes=100).eval()
    with torch.no_grad():
        taps = model.features(torch.randn(1, 3, 288, 384))
    shapes = [tuple(t.shape[1:]) for t in taps]
    assert shapes == [(64, 288, 384), (64, 288, 384), (128, 144, 192), (256, 72, 96), (512, 36, 48)]


def test_taps_are_pre_relu_and_plain_forward_recomputes_from_them() -> None:
    model = build_backbone("resnet18_reduced", num_classes=5).eval()
    randomise_bn(model)
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        taps = model.features(x)
        assert all((t < 0).any() and (t > 0).any() for t in taps)
        # Each tap is its block applied to the ReLU of the previous tap.
        for i in range(1, 5):
            torch.testing.assert_close(model.blocks[i](F.relu(taps[i - 1])), taps[i])
        expected = model.head(F.relu(taps[-1]).mean(dim=(2, 3)))
        torch.testing.assert_close(model(x), expected)
        torch.testing.assert_close(model(x, modulate=lambda i, c: F.relu(c)), expected)


def test_pooling_averages_the_whole_non_square_map() -> None:
    model = build_backbone("resnet18_reduced", num_classes=3).eval()
    x = torch.randn(1, 3, 32, 48)  # last map is 4 x 6

    def right_columns_only(i: int, pre: Tensor) -> Tensor:
        if i < 4:
            return F.relu(pre)
        out = torch.zeros_like(pre)
        out[..., 4:] = 1.0  # only the two right columns are non-zero
        return out

    with torch.no_grad():
        emb = model.embed(x, modulate=right_columns_only)
        logits = model(x, modulate=right_columns_only)
    # Whole map: 2 of 6 columns; the authors' avg_pool2d(kernel=H=4) would see columns 0..3 only and give 0.
    torch.testing.assert_close(emb, torch.full((1, 160), 2 / 6))
    buggy = F.avg_pool2d(right_columns_only(4, torch.zeros(1, 160, 4, 6)), 4).flatten(1)
    assert torch.all(buggy == 0)
    torch.testing.assert_close(logits, model.head(emb))


@pytest.mark.parametrize("name", backbone_names())
def test_every_backbone_runs_and_learns_one_step(name: str) -> None:
    torch.manual_seed(0)
    model = build_backbone(name, num_classes=4)
    x, y = torch.randn(3, 3, 16, 20), torch.tensor([0, 1, 3])
    assert [t.shape[1] for t in model.features(x)] == model.tap_channels
    torch.manual_seed(1)  # the same stochastic-depth draws (EfficientNet) in both train-mode passes
    logits = model(x)
    assert logits.shape == (3, 4) and torch.isfinite(logits).all()
    loss = F.cross_entropy(logits, y)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    # A small step: the /32 networks see 1x1 maps here, BN over 3 values, and overshoot at 0.05.
    torch.optim.SGD(model.parameters(), lr=0.005).step()
    torch.manual_seed(1)
    assert F.cross_entropy(model(x), y).item() < loss.item()  # one step on the batch lowers its loss


def test_unknown_backbone_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown backbone 'vgg16'; choose one of: efficientnet_b0, mobilenet_v2, "
                                        "resnet18, resnet18_reduced, resnet50"):
        build_backbone("vgg16", num_classes=10)
    with pytest.raises(UserError, match="num_classes"):
        build_backbone("resnet18", num_classes=0)


# ---------------------------------------------------------------------------------------------- modulation


def test_multiply_is_relu_of_product_at_every_point() -> None:
    channels = [20, 20, 40, 80, 160]
    mnp = build_modulation("multiply", channels, [1, 1, 1, 1, 1])
    assert n_params(mnp) == 0
    for i, c in enumerate(channels):
        c_pre, s_pre = torch.randn(2, c, 3, 5), torch.randn(2, c, 3, 5)
        assert torch.equal(mnp(i, c_pre, s_pre), torch.clamp(c_pre * s_pre, min=0))


def test_disabled_points_give_plain_relu() -> None:
    for name in modulation_names():
        mnp = build_modulation(name, [4, 4, 8, 16, 32], [0, 1, 0, 1, 0])
        for i in (0, 2, 4):
            c_pre = torch.randn(2, [4, 4, 8, 16, 32][i], 3, 3)
            assert torch.equal(mnp(i, c_pre, torch.randn_like(c_pre)), F.relu(c_pre))
    # Learned variants carry parameters only at the enabled points.
    assert sorted(build_modulation("aggregate", [4, 4, 8, 16, 32], [0, 1, 0, 1, 0]).points) == ["1", "3"]


def test_multiply_modulated_forward_matches_step_by_step() -> None:
    model = build_backbone("resnet18_reduced", num_classes=6).eval()
    saliency = build_backbone("resnet18_reduced", num_classes=1).eval()
    randomise_bn(model)
    mnp = build_modulation("multiply", model.tap_channels, [1, 1, 1, 1, 1])
    x = torch.randn(2, 3, 20, 28)
    with torch.no_grad():
        s = saliency.features(x)
        h = x
        for i, block in enumerate(model.blocks):
            h = F.relu(block(h) * s[i])
        expected = model.head(h.mean(dim=(2, 3)))
        got = model(x, modulate=lambda i, c: mnp(i, c, s[i]))
        plain = model(x)
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, plain)


@pytest.mark.parametrize("name", ["dwseparable", "aggregate"])
def test_learned_modulation_keeps_size_and_trains(name: str) -> None:
    model = build_backbone("resnet18_reduced", num_classes=5)
    saliency = build_backbone("resnet18_reduced", num_classes=1)
    mnp = build_modulation(name, model.tap_channels, [1, 1, 1, 1, 1])
    x = torch.randn(2, 3, 18, 26)  # odd-sized maps deeper down: 9x13, 5x7, 3x4
    s = [t.detach() for t in saliency.features(x)]
    for i, c in enumerate(model.features(x)):
        assert mnp(i, c, s[i]).shape == c.shape
    logits = model(x, modulate=lambda i, c: mnp(i, c, s[i]))
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mnp.parameters())
    assert all(p.grad is None for p in saliency.parameters())


def test_modulation_errors_are_user_errors() -> None:
    with pytest.raises(UserError, match="unknown modulation 'add'; choose one of: aggregate, dwseparable, multiply"):
        build_modulation("add", [4, 4, 8, 16, 32], [1, 1, 1, 1, 1])
    with pytest.raises(UserError, match="5 flags of 0 or 1"):
        build_modulation("multiply", [4, 4, 8, 16, 32], [1, 1, 1])
    with pytest.raises(UserError, match="5 flags of 0 or 1"):
        build_modulation("multiply", [4, 4, 8, 16, 32], [1, 2, 1, 1, 1])


# ---------------------------------------------------------------------------------------------- saliency net


def test_saliency_net_parameter_counts() -> None:
    net = SaliencyNet("resnet18")
    assert n_params(net) == SALIENCY_RESNET18_PARAMS
    assert 12_000_000 <= n_params(net) <= 12_100_000  # method.md: ~12.06 M
    assert n_params(net.encoder) == RESNET18_100_PARAMS - (512 * 100 + 100)
    assert len(net.encoder_parameters()) + len(net.decoder_parameters()) == len(list(net.parameters()))
    assert n_params(SaliencyNet("resnet18", n_gaussians=16)) == SALIENCY_RESNET18_G16_PARAMS


@pytest.mark.parametrize("size", [(64, 96), (36, 52), (35, 51)])
@pytest.mark.parametrize("n_gaussians", [0, 16])
def test_saliency_map_in_unit_interval_at_input_size(size: tuple[int, int], n_gaussians: int) -> None:
    net = SaliencyNet("resnet18_reduced", n_gaussians=n_gaussians).eval()
    with torch.no_grad():
        sal, taps = net(torch.randn(2, 3, *size))
    assert sal.shape == (2, 1, *size)
    assert torch.isfinite(sal).all() and (sal > 0).all() and (sal < 1).all()
    assert len(taps) == 5


@pytest.mark.parametrize("name", backbone_names())
def test_saliency_taps_are_the_encoder_features(name: str) -> None:
    net = SaliencyNet(name).eval()
    randomise_bn(net)
    x = torch.randn(1, 3, 16, 24)
    with torch.no_grad():
        sal, taps = net(x)
        reference = net.encoder.features(x)
    assert torch.isfinite(sal).all()
    for t, r in zip(taps, reference, strict=True):
        assert torch.equal(t, r)
    assert (taps[-1] < 0).any()


def test_saliency_net_trains_both_parameter_groups() -> None:
    net = SaliencyNet("resnet18_reduced", n_gaussians=16).train()
    sal, _ = net(torch.randn(2, 3, 16, 24))
    sal.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert net.decoder.priors.params.grad.abs().sum() > 0
    rebuilt = SaliencyNet(**net.config())
    assert net.config() == {"backbone": "resnet18_reduced", "n_gaussians": 16}
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in net.parameters()]


def test_decoder_bn_momentum_and_skip_dropout() -> None:
    decoder = SaliencyNet("resnet18_reduced").decoder
    bns = [m for m in decoder.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.01 for m in bns)
    drops = [m for m in decoder.modules() if isinstance(m, nn.Dropout2d)]
    assert [m.p for m in drops] == [0.6, 0.6]
    assert all(any(isinstance(m, nn.Dropout2d) for m in skip.modules()) for skip in (decoder.skip2, decoder.skip3))
    assert isinstance(decoder.skip3, Skip) and isinstance(decoder.skip2, Skip)


def test_dropout_only_in_train_mode() -> None:
    net = SaliencyNet("resnet18_reduced")
    randomise_bn(net)
    x = torch.randn(1, 3, 16, 24)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x)[0], net(x)[0])
        # Train mode with frozen BN statistics: only dropout differs between two passes.
        net.decoder.train()
        for m in net.decoder.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        assert not torch.equal(net(x)[0], net(x)[0])


def test_gaussian_priors_closed_form() -> None:
    priors = GaussianPriors(16)
    with torch.no_grad():
        priors.params.copy_(torch.zeros(16, 2, 2))
        priors.params[0] = torch.tensor([[0.25, -1.0], [0.75, -2.0]])  # mu_y 0.25, sigma_y e^-1; mu_x 0.75
    maps = priors(torch.zeros(2, 8, 5, 9))  # grid y: 0, .25, .5, .75, 1; x: 0, .125, ..., 1
    assert maps.shape == (2, 16, 5, 9)
    assert maps[0, 0, 1, 6].item() == pytest.approx(6.0)
    sigma_y, sigma_x = torch.exp(torch.tensor(-1.0)), torch.exp(torch.tensor(-2.0))
    expected = 6.0 * torch.exp(-0.5 * (0.25 / sigma_y) ** 2) * torch.exp(-0.5 * (0.125 / sigma_x) ** 2)
    assert maps[1, 0, 2, 7].item() == pytest.approx(expected.item(), rel=1e-5)


def test_unisal_prior_layout_and_bad_arguments() -> None:
    params = GaussianPriors(16).params
    assert params.shape == (16, 2, 2)
    assert torch.equal(params[15], torch.tensor([[0.5, 0.0], [0.5, 0.0]]))  # the broad centre Gaussian
    assert torch.equal(params[0], torch.tensor([[0.25, -1.5], [0.25, -1.5]]))
    with pytest.raises(UserError, match="n_gaussians"):
        SaliencyNet("resnet18", n_gaussians=-1)
    with pytest.raises(UserError, match="unknown backbone"):
        SaliencyNet("vgg")
