"""The one optimiser of a saliency network, in pretraining (`ser pretrain-saliency`) and as SER's branch (`ser train`).

SGD with momentum and two named parameter groups (method.md section 3, the UNISAL recipe the paper follows):
`decoder` at `lr` with `weight_decay_decoder`, `encoder` at `lr * encoder_lr_factor` with `weight_decay_encoder`
(a pretrained encoder moves slower than the fresh decoder). Pretraining reads the four hyperparameters from the
`saliency` section, SER's branch from `train.sal_*`; the defaults are the same in both (momentum 0.9, encoder factor
0.1, decays 1e-4 / 1e-5).
"""

from __future__ import annotations

import torch

from ser_cli.models.saliency_net import SaliencyNet
from ser_cli.runtime.device import fused_optimizer_option


def saliency_sgd(net: SaliencyNet, lr: float, *, encoder_lr_factor: float, momentum: float,
                 weight_decay_decoder: float, weight_decay_encoder: float) -> torch.optim.SGD:
    """SGD over `net` with a `decoder` group at `lr` and an `encoder` group at `lr * encoder_lr_factor`."""
    groups = [
        {"name": "decoder", "params": net.decoder_parameters(), "lr": lr, "weight_decay": weight_decay_decoder},
        {"name": "encoder", "params": net.encoder_parameters(), "lr": lr * encoder_lr_factor,
         "weight_decay": weight_decay_encoder},
    ]
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, **fused_optimizer_option(net.parameters()))
