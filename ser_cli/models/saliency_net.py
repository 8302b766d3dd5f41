"""The saliency predictor of SER (NeurIPS 2024): a backbone encoder (ResNet-18 in the paper) with a UNISAL-style
decoder.

The decoder follows UNISAL (Droste et al., ECCV 2020) without its recurrent part, domain-specific modules and
smoothing, adapted as in SER (method.md section 3; reference/saliency-datasets-and-metrics.md section 5.2): it reads
the encoder's pre-activation taps f2, f3, f4 through the encoder's own activation there (ReLU for the ResNets);
optional learned Gaussian prior maps are concatenated to act(f4); an inverted residual maps f4 to the width of f3;
two bilinear upsamplings each concatenate a skip branch (1x1 expand x2, BN, ReLU6, Dropout2d(0.6), 1x1, BN) from f3
then f2 and an inverted residual (expand 2); a 1x1 conv gives one channel, nearest-upsampled to the input size, then
a sigmoid. Decoder BN momentum is 0.01. Decoder widths
are the encoder's tap widths (256, 128, 64 for ResNet-18, as in UNISAL), so the reduced backbone gets a
proportionally narrow decoder and a wide torchvision encoder a wide one; each upsampling goes to the size of the
next skip's map, so any strides work. With `resnet18` and no priors the network has 12,060,865 parameters.
"""

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ser_cli.models.recompute import recompute_in_backward
from ser_cli.models.registry import Activation, Backbone, build_backbone
from ser_cli.runtime.errors import UserError

DECODER_BN_MOMENTUM = 0.01
SKIP_DROPOUT = 0.6
MAX_GAUSSIANS = 64  # the bound of saliency.n_gaussians (`ser_cli.config`)
PRIOR_SCALE = 6.0  # UNISAL's amplitude for the prior maps, comparable to ReLU feature magnitudes


def _bn(channels: int) -> nn.BatchNorm2d:
    """Decoder BatchNorm with the slow running-statistics momentum of UNISAL."""
    return nn.BatchNorm2d(channels, momentum=DECODER_BN_MOMENTUM)


class InvertedResidual(nn.Module):
    """MobileNetV2 inverted residual at stride 1: [1x1 expand, BN, ReLU6], depthwise 3x3, BN, ReLU6, 1x1, BN."""

    def __init__(self, in_channels: int, out_channels: int, expand: int) -> None:
        """Build the block.

        Args:
            in_channels: Input channels.
            out_channels: Output channels; the residual is added when equal to `in_channels`.
            expand: Hidden width as a multiple of `in_channels`; 1 skips the expanding 1x1 conv.
        """
        super().__init__()
        hidden = in_channels * expand
        expansion = [nn.Conv2d(in_channels, hidden, 1, bias=False), _bn(hidden), nn.ReLU6(inplace=True)]
        self.conv = nn.Sequential(
            *(expansion if expand != 1 else []),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False),
            _bn(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            _bn(out_channels),
        )
        self.residual = in_channels == out_channels
        for m in self.conv.modules():
            if isinstance(m, nn.Conv2d):
                # MobileNetV2's He init on fan-out (k * k * out_channels), as UNISAL uses.
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, H, W)."""
        out = self.conv(x)
        return x + out if self.residual else out


class Skip(nn.Sequential):
    """UNISAL skip branch: 1x1 to 2x channels, BN, ReLU6, Dropout2d(0.6), 1x1 to `out_channels`, BN."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        """Build the branch.

        Args:
            in_channels: Channels of the encoder tap.
            out_channels: Channels concatenated to the decoder path.
        """
        hidden = 2 * in_channels
        super().__init__(
            nn.Conv2d(in_channels, hidden, 1, bias=False),
            _bn(hidden),
            nn.ReLU6(inplace=True),
            nn.Dropout2d(SKIP_DROPOUT),
            nn.Conv2d(hidden, out_channels, 1),
            _bn(out_channels),
        )


class GaussianPriors(nn.Module):
    """Learned axis-aligned 2-D Gaussian maps (UNISAL's centre / layout priors).

    Parameters are (n, 2, 2): per Gaussian, for y then x, the mean and log standard deviation on a [0, 1] grid.
    """

    def __init__(self, n: int) -> None:
        """Initialise `n` Gaussians: UNISAL's hand-made layout for n == 16, random around the centre otherwise."""
        super().__init__()
        self.params = nn.Parameter(_unisal_layout() if n == 16 else _random_layout(n))

    def forward(self, x: Tensor) -> Tensor:
        """Prior maps at the resolution of `x` (B, C, H, W) -> (B, n, H, W)."""
        h, w = x.shape[-2:]
        ys = torch.linspace(0, 1, h, dtype=x.dtype, device=x.device)
        xs = torch.linspace(0, 1, w, dtype=x.dtype, device=x.device)
        mu, std = self.params[..., 0].to(x.dtype), self.params[..., 1].to(x.dtype).exp()  # (n, 2) each
        gy = torch.exp(-0.5 * ((ys[None, :] - mu[:, 0:1]) / std[:, 0:1]) ** 2)  # (n, H)
        gx = torch.exp(-0.5 * ((xs[None, :] - mu[:, 1:2]) / std[:, 1:2]) ** 2)  # (n, W)
        maps = PRIOR_SCALE * gy[:, :, None] * gx[:, None, :]  # (n, H, W)
        return maps.expand(x.shape[0], -1, -1, -1)


def _unisal_layout() -> Tensor:
    """16 Gaussians: a 3x3 grid of small ones, 3 wide, 3 tall, 1 broad at the centre; (16, 2, 2)."""
    means = [*itertools.product((0.25, 0.5, 0.75), repeat=2)]
    means += [(0.5, 0.25), (0.5, 0.5), (0.5, 0.75), (0.25, 0.5), (0.5, 0.5), (0.75, 0.5), (0.5, 0.5)]
    log_stds = [(-1.5, -1.5)] * 9 + [(0.0, -1.5)] * 3 + [(-1.5, 0.0)] * 3 + [(0.0, 0.0)]
    return torch.stack((torch.tensor(means), torch.tensor(log_stds)), dim=-1)  # (16, y/x, mu/log_std)


def _random_layout(n: int) -> Tensor:
    """`n` Gaussians near the centre with std about e^-1 of the image side; (n, 2, 2)."""
    return torch.stack((0.5 + 0.1 * torch.randn(n, 2), -1.0 + 0.2 * torch.randn(n, 2)), dim=-1)


class UnisalDecoder(nn.Module):
    """Decoder from the encoder's pre-activation taps f2, f3, f4 to a one-channel saliency map in (0, 1)."""

    def __init__(self, tap_channels: list[int], n_gaussians: int,
                 activations: tuple[Activation, ...] | None = None) -> None:
        """Build the decoder.

        Args:
            tap_channels: Channels of the five encoder taps.
            n_gaussians: Learned prior maps concatenated to act(f4); 0 for none (the paper's setting).
            activations: The encoder's activation after each tap (its `activations`); None: ReLU.
        """
        super().__init__()
        self.activations = tuple(activations) if activations is not None else (F.relu,) * len(tap_channels)
        # The decoder path narrows through the encoder's own widths: 512 -> 256 -> 128 -> 64 for ResNet-18.
        c1, c2, c3, c4 = tap_channels[1:5]
        self.priors = GaussianPriors(n_gaussians) if n_gaussians > 0 else None
        self.coarse = InvertedResidual(c4 + n_gaussians, c3, expand=1)
        self.skip3 = Skip(c3, c2)
        self.mid = InvertedResidual(c3 + c2, c2, expand=2)
        self.skip2 = Skip(c2, c1)
        self.fine = InvertedResidual(c2 + c1, c1, expand=2)
        self.adaptation = nn.Conv2d(c1, 1, 1)
        self.checkpoint_blocks = False  # recompute each block in the backward (`train.activation_checkpointing`)

    def forward(self, taps: list[Tensor], size: tuple[int, int]) -> Tensor:
        """Saliency map from the five pre-activation taps.

        Args:
            taps: Encoder taps; f2, f3, f4 = taps[2:5].
            size: Output (H, W), the input image size.

        Returns:
            (B, 1, H, W) in (0, 1).
        """
        # H_i, W_i: the map size at tap i (H_4 = H/8 on the ResNet-18s, H/32 on the torchvision backbones).
        f2, f3, f4 = (self.activations[i](taps[i]) for i in (2, 3, 4))
        if self.priors is not None:
            f4 = torch.cat((f4, self.priors(f4)), dim=1)  # (B, C4 + n, H_4, W_4)
        x = self._run(self.coarse, f4)  # (B, C3, H_4, W_4)
        # Upsample to the skip's size rather than x2 so odd input sizes line up.
        x = F.interpolate(x, size=f3.shape[-2:], mode="bilinear", align_corners=False)
        x = self._run(self.mid, torch.cat((x, self._run(self.skip3, f3)), dim=1))  # (B, C2, H_3, W_3)
        x = F.interpolate(x, size=f2.shape[-2:], mode="bilinear", align_corners=False)
        x = self._run(self.fine, torch.cat((x, self._run(self.skip2, f2)), dim=1))  # (B, C1, H_2, W_2)
        x = F.interpolate(self.adaptation(x), size=size, mode="nearest")  # (B, 1, H, W)
        return torch.sigmoid(x)

    def _run(self, block: nn.Module, x: Tensor) -> Tensor:
        # One block at a time, so that the backward holds one block's recomputed activations rather than the whole
        # decoder's (at 288x384 those of `fine` and `skip2` alone are about 2 GB).
        if self.checkpoint_blocks and torch.is_grad_enabled():
            return recompute_in_backward(block, x, modules=(block,))
        return block(x)


class SaliencyNet(nn.Module):
    """Saliency predictor: backbone encoder (head removed) + UNISAL-style decoder."""

    def __init__(self, backbone: str, n_gaussians: int = 0) -> None:
        """Build the network.

        Args:
            backbone: A registered backbone name, the same architecture as the classifier's.
            n_gaussians: Learned Gaussian prior maps in the decoder; 0 (the paper's setting) for none.

        Raises:
            UserError: unknown backbone or `n_gaussians` outside 0..MAX_GAUSSIANS.
        """
        super().__init__()
        if not 0 <= n_gaussians <= MAX_GAUSSIANS:  # a crafted model.pt's 1e11 would allocate before failing
            raise UserError(f"n_gaussians must be in 0..{MAX_GAUSSIANS}, got {n_gaussians}")
        self.backbone_name = backbone
        self.n_gaussians = n_gaussians
        self.encoder: Backbone = build_backbone(backbone, num_classes=1)
        # Only the taps are used: drop the head so it adds no dead parameters (encoder(x) gives pooled features).
        self.encoder.head = nn.Identity()
        self.decoder = UnisalDecoder(self.encoder.tap_channels, n_gaussians, self.encoder.activations)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Saliency map and encoder features.

        Args:
            x: Images, (B, 3, H, W).

        Returns:
            The map, (B, 1, H, W) in (0, 1), and the encoder's five pre-activation taps.
        """
        taps = self.encoder.features(x)
        return self.decoder(taps, x.shape[-2:]), taps

    def set_activation_checkpointing(self, on: bool) -> None:
        """Recompute the encoder's and the decoder's blocks in the backward (`train.activation_checkpointing`)."""
        self.encoder.checkpoint_blocks = on
        self.decoder.checkpoint_blocks = on

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of the encoder (the optimiser group with the lower learning rate)."""
        return list(self.encoder.parameters())

    def decoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of the decoder, Gaussian priors included."""
        return list(self.decoder.parameters())

    def config(self) -> dict[str, str | int]:
        """Arguments that rebuild this architecture: `SaliencyNet(**net.config())`."""
        return {"backbone": self.backbone_name, "n_gaussians": self.n_gaussians}
