"""The continual-learning ResNet-18 (He et al., CVPR 2016, as used by Mammoth and SER, NeurIPS 2024).

Differences from the ImageNet ResNet-18: the stem is a 3x3 stride-1 convolution + BN with no max-pool, so a
288x384 image gives maps of 288x384, 288x384, 144x192, 72x96 and 36x48 (method.md section 3). Each of the five
blocks (stem, stage1..stage4) returns its PRE-ReLU output, the tap SER's modulation multiplies; the ReLU between
blocks is applied by `Backbone` (or replaced by the modulation). Pooling averages the whole map. `resnet18` has
width 64 (11,220,132 parameters with 100 classes); `resnet18_reduced` is the width-20 variant of the
continual-learning literature, cheap enough for CPU work.
"""

import torch.nn.functional as F
from torch import Tensor, nn

from ser_cli.models.registry import Backbone, register_backbone


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN with a residual connection; returns the pre-ReLU sum."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        """Build the block.

        Args:
            in_channels: Input channels.
            out_channels: Output channels.
            stride: Stride of the first convolution and of the projection shortcut.
        """
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> pre-ReLU (B, C_out, H / stride, W / stride)."""
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)  # an internal tensor: in place is safe
        return self.bn2(self.conv2(out)) + self.shortcut(x)


class Stage(nn.Module):
    """A chain of BasicBlocks with ReLU between them; returns the last block's pre-ReLU output."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, n_blocks: int) -> None:
        """Build the stage.

        Args:
            in_channels: Input channels.
            out_channels: Channels of every block's output.
            stride: Stride of the first block.
            n_blocks: Number of BasicBlocks.
        """
        super().__init__()
        strides = [stride] + [1] * (n_blocks - 1)
        widths = [in_channels] + [out_channels] * (n_blocks - 1)
        self.units = nn.ModuleList(BasicBlock(w, out_channels, s) for w, s in zip(widths, strides, strict=True))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> pre-ReLU (B, C_out, H / stride, W / stride)."""
        x = self.units[0](x)
        for unit in self.units[1:]:
            x = unit(F.relu(x))
        return x


class ResNet(Backbone):
    """ResNet with a 3x3 stride-1 stem and no max-pool, exposing five pre-ReLU taps."""

    def __init__(self, num_classes: int, nf: int = 64, blocks_per_stage: tuple[int, ...] = (2, 2, 2, 2)) -> None:
        """Build the network.

        Args:
            num_classes: Width of the linear head.
            nf: Base width; the stages have nf, 2nf, 4nf, 8nf channels.
            blocks_per_stage: BasicBlocks in each of the four stages.
        """
        super().__init__()
        widths = [nf, nf, 2 * nf, 4 * nf, 8 * nf]
        strides = [1, 2, 2, 2]
        stem = nn.Sequential(nn.Conv2d(3, nf, 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(nf))
        stages = [
            Stage(widths[i], widths[i + 1], strides[i], blocks_per_stage[i]) for i in range(len(blocks_per_stage))
        ]
        self.blocks = nn.ModuleList([stem, *stages])
        self.tap_channels = widths
        self.head = nn.Linear(widths[-1], num_classes)
        self.num_classes = num_classes


@register_backbone("resnet18")
def resnet18(num_classes: int) -> ResNet:
    """ResNet-18, width 64 (the paper's backbone)."""
    return ResNet(num_classes, nf=64)


@register_backbone("resnet18_reduced")
def resnet18_reduced(num_classes: int) -> ResNet:
    """Reduced ResNet-18, width 20 (the cheap continual-learning variant)."""
    return ResNet(num_classes, nf=20)
