"""The one all-gather with gradients that every loss needing global negatives uses.

Every process computes the loss on the gathered global batch, so ``N = 2B_global - 2``
and cluster frequencies are counted over all processes. The backward of the gather
sums the incoming gradients across processes before taking this process's slice (the
fix for lightly #1528/#1977 and PyTorch #120386): with DDP's gradient averaging the
parameters then receive exactly the gradient of the single-process loss on the
concatenated batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["world_size", "rank", "gather_with_grad", "is_distributed"]


def is_distributed() -> bool:
    """Whether a default process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes in the default group (1 without one)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """Rank of this process in the default group (0 without one)."""
    return dist.get_rank() if is_distributed() else 0


class _GatherWithGrad(torch.autograd.Function):
    """Concatenate every process's tensor along dim 0; backward sums across processes."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        x = x.contiguous()
        n = world_size()
        size = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
        sizes = [torch.zeros_like(size) for _ in range(n)]
        dist.all_gather(sizes, size)
        sizes = [int(s.item()) for s in sizes]
        longest = max(sizes)
        padded = x
        if x.shape[0] < longest:  # all_gather needs equal shapes: pad, then trim
            padded = torch.cat([x, x.new_zeros((longest - x.shape[0], *x.shape[1:]))])
        parts = [torch.empty_like(padded) for _ in range(n)]
        dist.all_gather(parts, padded)
        ctx.sizes = sizes
        ctx.rank = rank()
        return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)])

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]]


def gather_with_grad(x: Tensor) -> Tensor:
    """All-gather ``x`` along dim 0 from every process, keeping gradients.

    Returns ``x`` unchanged when no process group is initialised. Processes may hold
    different numbers of rows. Every process gets the same concatenation, ordered by rank.

    Examples:
        >>> import torch
        >>> gather_with_grad(torch.ones(2, 3)).shape  # no process group: identity
        torch.Size([2, 3])
    """
    if world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)
