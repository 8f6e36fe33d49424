"""The package's collectives: one pad-gather-trim of row blocks, and the gather with gradients over it.

Every process computes the loss on the gathered global batch, so ``N = 2B_global - 2``
and cluster frequencies are counted over all processes. The backward of the gather
sums the incoming gradients across processes before taking this process's slice (the
fix for lightly #1528/#1977 and PyTorch #120386): with DDP's gradient averaging the
parameters then receive exactly the gradient of the single-process loss on the
concatenated batch. :func:`gather_rows` is the one place that pads blocks of different
lengths to a common shape, all-gathers them and trims the padding: the gradient gather,
the sharded k-means and the callbacks all go through it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["world_size", "rank", "is_distributed", "gather_rows", "gather_with_grad",
           "all_reduce_sum"]

AllGather = Callable[[Tensor], Tensor | Sequence[Tensor]]
"""An all-gather of equal-shape tensors: ``(world, *shape)`` or ``world`` tensors, rank order."""


def is_distributed() -> bool:
    """Whether a default process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes in the default group (1 without one)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """Rank of this process in the default group (0 without one)."""
    return dist.get_rank() if is_distributed() else 0


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum ``t`` over all processes of the default group, in place; returns it."""
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def _default_all_gather(t: Tensor) -> list[Tensor]:
    parts = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(parts, t)
    return parts


def _gather_rows_and_sizes(t: Tensor, all_gather: AllGather) -> tuple[Tensor, list[int]]:
    """Pad, all-gather, trim: the concatenation in rank order and each rank's row count."""
    # one header per rank: (rows, *trailing shape); an empty rank may hold a (0, 0) tensor
    header = torch.tensor([t.shape[0], *t.shape[1:]], device=t.device, dtype=torch.long)
    headers = [[int(v) for v in h] for h in all_gather(header)]  # (world, t.ndim)
    rows = [h[0] for h in headers]
    shape = tuple(max(h[i] for h in headers) for i in range(1, len(header)))
    for r, h in enumerate(headers):
        if h[0] and tuple(h[1:]) != shape:
            raise ValueError(f"gather_rows: rank {r} holds rows of shape {tuple(h[1:])} but "
                             f"another rank {shape}; only the number of rows may differ")
    longest = max(max(rows), 1)  # never an empty collective
    if tuple(t.shape) == (longest, *shape):
        padded = t.contiguous()
    else:  # all_gather needs equal shapes: pad here, trim below
        padded = t.new_zeros((longest, *shape))
        if t.numel():
            padded[: t.shape[0]] = t
    parts = all_gather(padded)  # (world, longest, *shape)
    return torch.cat([parts[r][:n] for r, n in enumerate(rows)]), rows


def gather_rows(t: Tensor, all_gather: AllGather | None = None) -> Tensor:
    """Concatenate the row blocks ``t`` of every process along dim 0, in rank order.

    Processes may hold different numbers of rows (none included: an empty rank may pass
    a ``(0, ...)`` tensor of any trailing shape); rows must agree on their trailing
    shape. No gradient flows (see :func:`gather_with_grad`). A collective: every process
    must call it, in the same order.

    Args:
        t: This process's rows, ``(n_rank, ...)``.
        all_gather: The transport: a function that all-gathers a tensor of the same
            shape on every process and returns ``(world, *shape)`` (or a list of
            ``world`` tensors) in rank order, such as a Lightning strategy's
            ``trainer.strategy.all_gather`` (then call only when its world size is > 1).
            Default: ``torch.distributed.all_gather`` over the default group, and ``t``
            itself without one.

    Returns:
        ``(sum of n_rank, ...)``, the same on every process.

    Examples:
        >>> import torch
        >>> gather_rows(torch.arange(6).reshape(3, 2)).shape  # no process group: identity
        torch.Size([3, 2])
        >>> fake = lambda x: [x, x]  # what two processes holding the same block would gather
        >>> gather_rows(torch.ones(2, 3), all_gather=fake).shape
        torch.Size([4, 3])
    """
    if all_gather is None:
        if world_size() == 1:
            return t
        all_gather = _default_all_gather
    return _gather_rows_and_sizes(t, all_gather)[0]


class _GatherWithGrad(torch.autograd.Function):
    """Concatenate every process's tensor along dim 0; backward sums across processes."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        out, ctx.sizes = _gather_rows_and_sizes(x, _default_all_gather)
        ctx.rank = rank()
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]]


def gather_with_grad(x: Tensor) -> Tensor:
    """All-gather ``x`` along dim 0 from every process, keeping gradients.

    Returns ``x`` unchanged when no process group is initialised. Processes may hold
    different numbers of rows. Every process gets the same concatenation, ordered by rank
    (the rows of :func:`gather_rows`); the backward sums the incoming gradients over the
    processes and returns this process's slice.

    Examples:
        >>> import torch
        >>> gather_with_grad(torch.ones(2, 3)).shape  # no process group: identity
        torch.Size([2, 3])
    """
    if world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)
