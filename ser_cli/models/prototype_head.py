"""A nearest-prototype output head, CoPE's classifier (De Lange & Tuytelaars, "Continual Prototype Evolution",
ICCV 2021).

It replaces a backbone's linear head: the pooled features go through a linear projection to a `dim`-wide embedding,
L2-normalised onto the unit sphere; each class has a prototype on the same sphere (a buffer, not a parameter: CoPE
moves prototypes by a momentum rule, never by gradient) and a flag saying whether it exists yet. The head's logits
are the cosine similarities to the prototypes divided by the temperature T (a softmax over them is CoPE's class
posterior, and their argmax the nearest prototype); classes without a prototype get the dtype's lowest finite value,
so they are never predicted and a cross-entropy over all logits stays finite (adversarial attacks, `class_il_logits
= all`). Prototypes and flags live in the head's state dict, so checkpoints and `model.pt` carry them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PrototypeHead(nn.Module):
    """Linear projection + L2 normalisation, and cosine / T to the class prototypes as logits."""

    def __init__(self, in_features: int, n_classes: int, dim: int = 256, temperature: float = 0.05) -> None:
        """Build the projection; every prototype starts absent (zero vector, flag off).

        Args:
            in_features: Width of the backbone's pooled features.
            n_classes: Number of prototypes (every class of every task).
            dim: Embedding and prototype width (CoPE: 256).
            temperature: T of the logits cos / T (CoPE: 0.05).
        """
        super().__init__()
        self.in_features, self.n_classes, self.dim, self.temperature = in_features, n_classes, dim, temperature
        self.projection = nn.Linear(in_features, dim)
        self.register_buffer("prototypes", torch.zeros(n_classes, dim))
        self.register_buffer("known", torch.zeros(n_classes, dtype=torch.bool))

    def config(self) -> dict[str, Any]:
        """The constructor's arguments (saved with the weights to rebuild the head)."""
        return {"in_features": self.in_features, "n_classes": self.n_classes, "dim": self.dim,
                "temperature": self.temperature}

    def embed(self, pooled: Tensor) -> Tensor:
        """(B, in_features) pooled features -> (B, dim) unit-norm embeddings."""
        return F.normalize(self.projection(pooled), dim=1)

    def similarities(self, z: Tensor) -> Tensor:
        """(B, dim) unit embeddings -> (B, n_classes) logits: cos / T, lowest finite value for absent prototypes."""
        logits = z @ self.prototypes.to(z.dtype).t() / self.temperature  # (B, K)
        return logits.masked_fill(~self.known, torch.finfo(logits.dtype).min)

    def forward(self, pooled: Tensor) -> Tensor:
        """(B, in_features) -> (B, n_classes) logits."""
        return self.similarities(self.embed(pooled))
