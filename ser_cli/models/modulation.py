"""Modulation at the network's points (MNP): how saliency features modulate the classifier (SER, NeurIPS 2024).

At each of the five points (stem and after each stage) the classifier's pre-activation tap `c_i` and the saliency
encoder's pre-activation tap `s_i` are combined into the input of the next block (method.md section 3):
`multiply` is act_i(c * s) (the paper's default, no parameters); `dwseparable` is concat -> depthwise 3x3 -> 1x1 ->
BN -> act_i; `aggregate` is concat -> 3x3 conv -> BN -> act_i, padded so the map keeps its size (the authors' version
has no padding and crashes on the next block). act_i is the backbone's activation after tap i: ReLU for the
ResNets (the paper's ReLU(c * s)), ReLU6 for MobileNetV2, SiLU for EfficientNet. A point whose `blocks` flag is 0
is not modulated: act_i(c).
The saliency features are NOT detached here: the SER wrapper detaches them for training, while end-to-end
attacks (PGD through both branches) need their gradient.
"""

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ser_cli.models.registry import Activation
from ser_cli.runtime.errors import UserError
from ser_cli.runtime.registry import Registry


class Modulation(nn.Module, ABC):
    """Combines classifier and saliency taps at the enabled points; the plain activation elsewhere."""

    def __init__(self, channels: list[int], blocks: list[int],
                 activations: tuple[Activation, ...] | None = None) -> None:
        """Check and record the points.

        Args:
            channels: Channels of the taps at each point (a backbone's `tap_channels`).
            blocks: One flag per point, 1 to modulate there and 0 to leave the plain activation.
            activations: The backbone's activation after each tap (its `activations`); None: ReLU everywhere.

        Raises:
            UserError: `blocks` does not have one 0/1 flag per point.
        """
        super().__init__()
        if len(blocks) != len(channels) or any(b not in (0, 1) for b in blocks):
            raise UserError(f"modulation blocks must be {len(channels)} flags of 0 or 1, got {list(blocks)}")
        self.channels = list(channels)
        self.blocks = [int(b) for b in blocks]
        # Plain functions, not modules: the modulation's state dict stays what it was before activations existed.
        self.activations = tuple(activations) if activations is not None else (F.relu,) * len(channels)

    def forward(self, i: int, c_pre: Tensor, s_pre: Tensor) -> Tensor:
        """Input of the block after point `i`.

        Args:
            i: Point index, 0 (stem) to 4 (last stage).
            c_pre: Classifier's pre-activation tap, (B, C_i, H_i, W_i).
            s_pre: Saliency encoder's pre-activation tap, same shape.

        Returns:
            (B, C_i, H_i, W_i), the output of the point's activation.
        """
        if not self.blocks[i]:
            return self.activations[i](c_pre)
        return self.activations[i](self.combine(i, c_pre, s_pre))

    @abstractmethod
    def combine(self, i: int, c_pre: Tensor, s_pre: Tensor) -> Tensor:
        """The variant's combination at an enabled point `i`, before the activation; shapes as in `forward`."""


MODULATIONS = Registry("modulation")


def register_modulation(name: str) -> Callable[[type[Modulation]], type[Modulation]]:
    """Register a `Modulation` subclass under `name`."""
    return MODULATIONS.register(name)


def modulation_names() -> list[str]:
    """Names of the registered modulation variants, sorted."""
    return MODULATIONS.names()


def build_modulation(name: str, channels: list[int], blocks: list[int],
                     activations: tuple[Activation, ...] | None = None) -> Modulation:
    """Build the modulation variant `name` for taps with `channels`, enabled where `blocks` is 1.

    Args:
        name: A registered variant.
        channels: The backbone's `tap_channels`.
        blocks: One 0/1 flag per point.
        activations: The backbone's `activations`; None: ReLU at every point.

    Raises:
        UserError: unknown `name` or malformed `blocks`.
    """
    return MODULATIONS.lookup(name)(channels, blocks, activations)


@register_modulation("multiply")
class Multiply(Modulation):
    """act(c * s): the paper's default ReLU(c * s) on ResNets, no parameters."""

    def combine(self, i: int, c_pre: Tensor, s_pre: Tensor) -> Tensor:
        """The elementwise product, (B, C_i, H_i, W_i)."""
        return c_pre * s_pre


class _LearnedModulation(Modulation):
    """A learned module per enabled point, applied to concat(c, s)."""

    def __init__(self, channels: list[int], blocks: list[int],
                 activations: tuple[Activation, ...] | None = None) -> None:
        """Build one fusion module per enabled point; arguments as in `Modulation`."""
        super().__init__(channels, blocks, activations)
        # Keyed by point index; disabled points get no parameters.
        self.points = nn.ModuleDict({str(i): self.make_point(c) for i, c in enumerate(channels) if self.blocks[i]})

    @abstractmethod
    def make_point(self, channels: int) -> nn.Module:
        """The module mapping concat(c, s) (2C channels) to C channels at one point, before the activation."""

    def combine(self, i: int, c_pre: Tensor, s_pre: Tensor) -> Tensor:
        """Module of point `i` on concat(c, s), (B, 2 C_i, H_i, W_i) -> (B, C_i, H_i, W_i)."""
        return self.points[str(i)](torch.cat((c_pre, s_pre), dim=1))


@register_modulation("dwseparable")
class DWSeparable(_LearnedModulation):
    """concat(c, s) -> depthwise 3x3 (pad 1) -> 1x1 to C -> BN -> act."""

    def make_point(self, channels: int) -> nn.Module:
        """Depthwise-separable fusion for one point."""
        return nn.Sequential(
            nn.Conv2d(2 * channels, 2 * channels, 3, padding=1, groups=2 * channels, bias=False),
            nn.Conv2d(2 * channels, channels, 1, bias=False),  # BN follows: a bias would be redundant
            nn.BatchNorm2d(channels),
            # The activation (the point's act_i) is applied by `Modulation.forward`; the keys above are unchanged.
        )


@register_modulation("aggregate")
class Aggregate(_LearnedModulation):
    """concat(c, s) -> 3x3 conv (pad 1, unlike the authors' shrinking version) -> BN -> act."""

    def make_point(self, channels: int) -> nn.Module:
        """Full 3x3 fusion for one point."""
        return nn.Sequential(
            nn.Conv2d(2 * channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
