"""Synchronised BatchNorm that works on every backend (gloo on CPU as well as nccl): batch statistics over all ranks.

Under DistributedDataParallel each rank normalises with the statistics of its own batch, so K ranks of batch b are
not one process of batch K*b. Synchronised BatchNorm (Peng et al., "MegDet", CVPR 2018; `torch.nn.SyncBatchNorm`)
takes the mean and variance over the union of the ranks' batches. PyTorch's own layer refuses CPU tensors (its
forward checks for a GPU), so this one builds the same statistics from two differentiable all-reduces (`_AllSum`:
the backward of a sum over ranks is the sum of the ranks' gradients, which gives every rank the gradient of the
summed loss, as `torch.nn.SyncBatchNorm`'s backward does). Outside training, or without a
process group, it is plain `BatchNorm2d` (same parameters, buffers and state-dict keys, so checkpoints load into
either).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn


class _AllSum(torch.autograd.Function):
    """Sum over ranks, differentiable (what `torch.distributed.nn.functional.all_reduce`, now deprecated, did)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, tensor: Tensor) -> Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        return _AllSum.apply(grad)


def all_reduce(tensor: Tensor) -> Tensor:
    """The sum of `tensor` over all ranks, with gradients flowing back to every rank's summand."""
    return _AllSum.apply(tensor)


class SyncBatchNorm2d(nn.BatchNorm2d):
    """`BatchNorm2d` whose training-mode statistics are those of the batch of all ranks together."""

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims, dtype = (0, 2, 3), x.dtype
        x = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # statistics in fp32 under autocast
        count = torch.tensor([x.numel() // x.shape[1]], dtype=torch.float64, device=x.device)
        dist.all_reduce(count)  # (1,) values per channel over all ranks
        n = float(count.item())
        mean = all_reduce(x.sum(dims)) / n  # (C,)
        centred = x - mean[None, :, None, None]  # (B, C, H, W)
        var = all_reduce(centred.square().sum(dims)) / n  # (C,) biased, as BatchNorm normalises with
        self._update_running_stats(mean.detach(), var.detach() * n / max(n - 1, 1))
        scale = torch.rsqrt(var + self.eps)
        y = centred * scale[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, unbiased_var: Tensor) -> None:
        """BatchNorm's update: exponential with `momentum`, or the cumulative average when momentum is None."""
        if not self.track_running_stats:
            return
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), factor)


def convert_sync_batchnorm(net: nn.Module) -> nn.Module:
    """Replace every `BatchNorm2d` of `net` (in place) by a `SyncBatchNorm2d` holding the same tensors."""
    for name, child in net.named_children():
        if type(child) is nn.BatchNorm2d:
            like = next((t for t in (*child.parameters(), *child.buffers()) if t.is_floating_point()), torch.zeros(0))
            sync = SyncBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats, device=like.device, dtype=like.dtype)
            sync.load_state_dict(child.state_dict())
            sync.train(child.training)
            setattr(net, name, sync)
        else:
            convert_sync_batchnorm(child)
    return net
