"""On-device image normalisation: uint8 (B, 3, H, W) -> float, ImageNet mean/std.

The paper trains without augmentation and normalises with the ImageNet statistics (Bellitto et al., NeurIPS 2024;
method.md section 2). Stream and buffer images stay uint8 (4x smaller in the replay buffer) and are normalised
here, on the device, right before a forward pass, as one fused multiply-add with precomputed constants.
"""

from __future__ import annotations

import torch
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalizer:
    """Maps uint8 images to `(x / 255 - mean) / std` on one device."""

    def __init__(
        self,
        device: torch.device | str,
        memory_format: torch.memory_format = torch.contiguous_format,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        """Precompute the per-channel scale and shift on `device`.

        Args:
            device: Where images are normalised (and where the networks live).
            memory_format: Layout of the output (`torch.channels_last` for the bf16 CUDA path).
            mean: Per-channel mean on the [0, 1] scale.
            std: Per-channel standard deviation on the [0, 1] scale.
        """
        self.device = torch.device(device)
        self.memory_format = memory_format
        mean_t = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)  # (1, 3, 1, 1)
        self.shift = -mean_t / std_t  # (1, 3, 1, 1)

    def __call__(self, images: Tensor) -> Tensor:
        """Normalise a batch.

        Args:
            images: uint8 (B, 3, H, W), on any device.

        Returns:
            float32 (B, 3, H, W) on the normaliser's device, in its memory format.
        """
        x = images.to(self.device, non_blocking=True).float()  # (B, 3, H, W) in 0..255
        return torch.addcmul(self.shift, x, self.scale).contiguous(memory_format=self.memory_format)

    def unit(self, x01: Tensor) -> Tensor:
        """Normalise float images on the [0, 1] scale, differentiably (adversarial attacks work on that scale).

        Args:
            x01: float (B, 3, H, W) in [0, 1].

        Returns:
            (B, 3, H, W) `(x01 - mean) / std` on the normaliser's device, in its memory format.
        """
        x = torch.addcmul(self.shift, x01.to(self.device), 255.0 * self.scale)  # 255 * scale = 1 / std
        return x.contiguous(memory_format=self.memory_format)
