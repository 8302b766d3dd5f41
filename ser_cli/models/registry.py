"""Backbone registry and contract: classifier / saliency-encoder networks looked up by name.

SER (Bellitto et al., NeurIPS 2024, section 3) uses one backbone architecture for both the classifier and the
saliency encoder, and modulates the classifier at five points (stem and after each stage) with the saliency
encoder's pre-activation features. `Backbone` is that contract: a network made of five blocks that each return a
pre-activation tap, run block by block with the architecture's activation after each tap (ReLU for ResNets, ReLU6
for MobileNetV2, SiLU for EfficientNet) or a pluggable replacement of it, then whole-map average pooling and a
linear head. Architectures only build their blocks and register a factory with `@register_backbone("name")`, in the
style of timm's model registry.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ser_cli.models.recompute import recompute_in_backward
from ser_cli.runtime.errors import UserError
from ser_cli.runtime.registry import Registry

Modulate = Callable[[int, Tensor], Tensor]
Activation = Callable[[Tensor], Tensor]


class Backbone(nn.Module):
    """Five pre-activation blocks, global average pooling over the whole map, linear head.

    Subclasses set `blocks` (5 modules, each mapping its input to a PRE-activation output), `tap_channels` (the
    channels of those outputs), `head` (Linear from `tap_channels[-1]`) and `num_classes`; architectures whose
    activation is not ReLU also set `activations` (5 out-of-place functions, the one after each tap).
    """

    blocks: nn.ModuleList
    tap_channels: list[int]
    head: nn.Linear
    num_classes: int
    # Plain functions, not modules: no state-dict entries, so ResNet-18 checkpoints are unchanged.
    activations: tuple[Activation, ...] = (F.relu,) * 5
    # Recompute each block in the backward instead of keeping its activations (`train.activation_checkpointing`),
    # and the modules besides the block whose BatchNorm statistics a recompute must leave alone (the modulation's).
    checkpoint_blocks: bool = False
    recomputed_with: tuple[nn.Module, ...] = ()

    def features(self, x: Tensor) -> list[Tensor]:
        """The five pre-activation taps of the plain network (the saliency encoder's output).

        Args:
            x: Images, (B, 3, H, W).

        Returns:
            One tensor per block, (B, tap_channels[i], H_i, W_i); returned as computed, not cloned.
        """
        recompute = self.checkpoint_blocks and torch.is_grad_enabled()

        def run(block: nn.Module, inp: Tensor) -> Tensor:
            return recompute_in_backward(block, inp, modules=(block,)) if recompute else block(inp)

        taps = [run(self.blocks[0], x)]
        for act, block in zip(self.activations, self.blocks[1:], strict=False):
            # Out-of-place activation: the taps must keep their negative values.
            taps.append(run(block, act(taps[-1])))
        return taps

    def embed(self, x: Tensor, modulate: Modulate | None = None) -> Tensor:
        """Pooled features before the head.

        Args:
            x: Images, (B, 3, H, W).
            modulate: `modulate(i, pre_i)` replaces `activations[i](pre_i)` as the output of block i; None for the
                plain net.

        Returns:
            (B, tap_channels[-1]) averages over the whole last map.
        """
        activate = modulate if modulate is not None else self.activate
        recompute = self.checkpoint_blocks and torch.is_grad_enabled()
        for i, block in enumerate(self.blocks):
            def run(inp: Tensor, i: int = i, block: nn.Module = block) -> Tensor:
                return activate(i, block(inp))

            # (B, C_i, H_i, W_i)
            x = recompute_in_backward(run, x, modules=(block, *self.recomputed_with)) if recompute else run(x)
        # Whole-map mean: the authors' avg_pool2d(kernel=H) saw only the left H columns of a non-square map.
        return x.mean(dim=(2, 3))  # (B, C_4)

    def forward(self, x: Tensor, modulate: Modulate | None = None) -> Tensor:
        """Logits, (B, num_classes); `modulate` as in `embed`."""
        return self.head(self.embed(x, modulate))

    def activate(self, i: int, pre: Tensor) -> Tensor:
        """The plain network's activation after block `i`, out of place."""
        return self.activations[i](pre)


BACKBONES = Registry("backbone")


def register_backbone(name: str) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    """Register a backbone factory `factory(num_classes) -> Backbone` under `name` (the params / CLI key)."""
    return BACKBONES.register(name)


def backbone_names() -> list[str]:
    """Names of the registered backbones, sorted."""
    return BACKBONES.names()


def build_backbone(name: str, num_classes: int) -> Backbone:
    """Build the backbone registered as `name` with a `num_classes`-way linear head.

    Args:
        name: A registered backbone name.
        num_classes: Width of the classification head.

    Raises:
        UserError: `name` is not registered or `num_classes` is not positive.
    """
    factory = BACKBONES.lookup(name)
    if num_classes < 1:
        raise UserError(f"num_classes must be >= 1, got {num_classes}")
    return factory(num_classes=num_classes)
