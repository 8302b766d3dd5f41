"""torchvision CNNs as SER backbones: ResNet-50 (He et al., CVPR 2016), MobileNetV2 (Sandler et al., CVPR 2018),
EfficientNet-B0 (Tan and Le, ICML 2019).

Each is torchvision's own model (`weights=None`, so no download; `load_torchvision_weights` starts it from a local
torchvision state-dict file instead), traced and cut into the five blocks of the `Backbone` contract at five
pre-activation taps (`ser_cli.models.graph_split`), one per resolution /2, /4, /8, /16, /32, so that SER's
modulation multiplies where the network itself would apply its activation (Bellitto et al., NeurIPS 2024,
section 3). ResNet-50's stage outputs are residual sums followed by a ReLU: the taps are those sums. MobileNetV2's
and EfficientNet's stage outputs are linear bottlenecks with no activation after them; their taps are the
BatchNorm before the ReLU6 / SiLU of the 1x1 expansion of the first block of the next (stride-2) stage, i.e. the
stage output widened x6, and, last, the BN of the final 1x1 conv (1280 channels). Every registry entry below names
its tap nodes (`torchvision.models.feature_extraction.get_graph_node_names` spelling, traced through
torchvision.ops modules). The head is torchvision's own final Linear; the dropout torchvision puts before it in
MobileNetV2 and EfficientNet is not used (the contract's head is a Linear on the pooled features).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from ser_cli.models.registry import Backbone, register_backbone
from ser_cli.runtime.errors import UserError
from ser_cli.runtime.torch_file import read_torch_file

# State-dict entries a file may lack without losing weights (older torchvision files have no BN batch counters).
OPTIONAL_SUFFIXES = ("num_batches_tracked",)


@dataclass(frozen=True)
class TorchvisionSpec:
    """How to build one torchvision architecture and where its five taps are."""

    builder: str  # a torchvision.models builder: builder(weights=None, num_classes=n)
    taps: tuple[tuple[str, int], ...]  # (node name, channels) of the five taps, in forward order
    head: str  # the builder's final Linear, used as the backbone's head


class TorchvisionBackbone(Backbone):
    """A torchvision CNN run block by block: five fx blocks sharing the model's modules, its activations, its head."""

    def __init__(self, spec: TorchvisionSpec, num_classes: int) -> None:
        """Build the torchvision model with random weights and cut it at the spec's taps.

        Args:
            spec: Architecture and taps.
            num_classes: Width of the linear head.
        """
        # torchvision is imported only when such a backbone is built: at module level it would add about a third
        # to the start-up of every `ser` command (torch + torchvision vs torch alone).
        import torchvision

        from ser_cli.models.graph_split import split_at_taps

        super().__init__()
        model = getattr(torchvision.models, spec.builder)(weights=None, num_classes=num_classes)
        blocks, activations = split_at_taps(model, [node for node, _ in spec.taps])
        self.spec = spec
        self.blocks = nn.ModuleList(blocks)
        self.activations = tuple(activations)
        self.tap_channels = [channels for _, channels in spec.taps]
        self.head = model.get_submodule(spec.head)
        self.num_classes = num_classes
        _check_every_weight_used(model, self)

    @property
    def torchvision_keys(self) -> dict[str, str]:
        """torchvision state-dict key -> this backbone's key, for every tensor of the blocks (not the head)."""
        return {key: f"blocks.{i}.{key}" for i, block in enumerate(self.blocks) for key in block.state_dict()}

    def load_torchvision_state_dict(self, weights: dict[str, Tensor], source: str) -> int:
        """Copy a torchvision state dict of this architecture into the blocks; its classifier is ignored.

        Args:
            weights: `torchvision.models.NAME().state_dict()` or a torchvision weights file's content.
            source: How messages name the weights, e.g. "train.backbone_weights resnet50.pth".

        Returns:
            The number of tensors copied.

        Raises:
            UserError: the first missing, mis-shaped or unexpected key, in one line.
        """
        keys, ours = self.torchvision_keys, self.state_dict()
        head = self.spec.head.split(".")[0] + "."
        weights = {k: v for k, v in weights.items() if not k.startswith(head)}
        for key, mapped in keys.items():
            if key not in weights and not key.endswith(OPTIONAL_SUFFIXES):
                raise UserError(f"{source}: missing key '{key}' (weights of another architecture?)")
            if key in weights and weights[key].shape != ours[mapped].shape:
                raise UserError(f"{source}: shape mismatch at '{key}': file {tuple(weights[key].shape)}, "
                                f"network {tuple(ours[mapped].shape)} (weights of another architecture?)")
        unexpected = next((k for k in weights if k not in keys), None)
        if unexpected is not None:
            raise UserError(f"{source}: unexpected key '{unexpected}' (not part of this architecture)")
        self.load_state_dict({keys[k]: v for k, v in weights.items()}, strict=False)
        return len(weights)


def _check_every_weight_used(model: nn.Module, backbone: TorchvisionBackbone) -> None:
    """A tensor of `model` in no block would be a weight the backbone silently never uses: a wrong tap list."""
    used = {id(t) for t in [*backbone.parameters(), *backbone.buffers()]}
    unused = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if id(t) not in used]
    if unused:
        raise ValueError(f"{type(model).__name__}: the blocks do not use {unused[0]} ({len(unused)} tensors)")


def load_torchvision_weights(backbone: Backbone, path: Path, option: str) -> int:
    """Start `backbone` (its blocks; the head keeps its initialisation) from a local torchvision weights file.

    Args:
        backbone: A backbone built from a torchvision architecture.
        path: A `.pth` / `.pt` file holding that architecture's torchvision state dict.
        option: The setting that named the file, for messages (e.g. "saliency.backbone_weights").

    Returns:
        The number of tensors loaded.

    Raises:
        UserError: not a torchvision backbone, or the file is missing, unreadable or of another architecture.
    """
    path = Path(path)
    if not isinstance(backbone, TorchvisionBackbone):
        raise UserError(f"{option}: torchvision weights fit only the torchvision backbones "
                        f"({', '.join(sorted(TORCHVISION_SPECS))}), not ser's own ResNet-18s")
    return backbone.load_torchvision_state_dict(_read_state_dict(path, option), f"{option} {path}")


def _read_state_dict(path: Path, option: str) -> dict[str, Tensor]:
    weights = read_torch_file(path, f"{option} {path}", what="torch weights file")
    if not isinstance(weights, dict) or not all(isinstance(v, Tensor) for v in weights.values()):
        raise UserError(f"{option} {path}: expected a torchvision state dict (name -> tensor), "
                        f"got {type(weights).__name__}")
    return weights


RESNET50 = TorchvisionSpec(
    "resnet50",
    (("bn1", 64), ("layer1.2.add", 256), ("layer2.3.add", 512), ("layer3.5.add", 1024), ("layer4.2.add", 2048)),
    head="fc",
)
MOBILENET_V2 = TorchvisionSpec(
    "mobilenet_v2",
    (("features.0.1", 32), ("features.4.conv.0.1", 144), ("features.7.conv.0.1", 192),
     ("features.14.conv.0.1", 576), ("features.18.1", 1280)),
    head="classifier.1",
)
EFFICIENTNET_B0 = TorchvisionSpec(
    "efficientnet_b0",
    (("features.0.1", 32), ("features.3.0.block.0.1", 144), ("features.4.0.block.0.1", 240),
     ("features.6.0.block.0.1", 672), ("features.8.1", 1280)),
    head="classifier.1",
)
TORCHVISION_SPECS = {"resnet50": RESNET50, "mobilenet_v2": MOBILENET_V2, "efficientnet_b0": EFFICIENTNET_B0}


@register_backbone("resnet50")
def resnet50(num_classes: int) -> TorchvisionBackbone:
    """torchvision ResNet-50 (7x7 stride-2 stem and max-pool), ReLU after every tap.

    Taps: `bn1` (the stem's BN, 64 ch, /2, before the max-pool), `layer1.2.add` (256, /4), `layer2.3.add` (512, /8),
    `layer3.5.add` (1024, /16), `layer4.2.add` (2048, /32): each stage's last residual sum, before its ReLU.
    """
    return TorchvisionBackbone(RESNET50, num_classes)


@register_backbone("mobilenet_v2")
def mobilenet_v2(num_classes: int) -> TorchvisionBackbone:
    """torchvision MobileNetV2 (width 1.0), ReLU6 after every tap.

    Taps: `features.0.1` (the stem's BN, 32 ch, /2); `features.4.conv.0.1` (144, /4), `features.7.conv.0.1`
    (192, /8), `features.14.conv.0.1` (576, /16): the BN of the 1x1 expansion of each stride-2 block, i.e. the
    linear bottleneck of the stage before it widened x6; `features.18.1` (1280, /32): the last 1x1 conv's BN.
    """
    return TorchvisionBackbone(MOBILENET_V2, num_classes)


@register_backbone("efficientnet_b0")
def efficientnet_b0(num_classes: int) -> TorchvisionBackbone:
    """torchvision EfficientNet-B0, SiLU after every tap (stochastic depth 0.2 in train mode, as torchvision's).

    Taps: `features.0.1` (the stem's BN, 32 ch, /2); `features.3.0.block.0.1` (144, /4), `features.4.0.block.0.1`
    (240, /8), `features.6.0.block.0.1` (672, /16): the BN of the 1x1 expansion of the first MBConv of each
    stride-2 stage, i.e. the stage output before it widened x6; `features.8.1` (1280, /32): the last 1x1 conv's BN.
    """
    return TorchvisionBackbone(EFFICIENTNET_B0, num_classes)
