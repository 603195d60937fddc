"""Collective helpers that work with or without a process group.

A head call sees the classes of one shard. Quantities that span shards are
built from three primitives:

- :func:`global_sum`: the value of ``all_reduce(x)`` with the gradient of the
  local ``x`` only. Every rank backpropagates its own part; arcface_torch's
  AllGather backward (a reduce-sum over ranks) then assembles the full
  gradient of the embeddings. Losses returned by heads use this, so their
  value is the global one on every rank.
- :func:`all_reduce_grad`: identity forward, all-reduce-sum of the gradient
  backward, for a parameter replicated on every rank but outside DDP
  (UniTSFace's threshold b).
- :func:`all_gather_rows`: concatenate per-rank row blocks with a gradient
  that flows back to the rank that owns each block.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

import torch
import torch.distributed as dist

__all__ = ["DistContext", "global_sum", "global_max", "all_reduce_grad", "all_gather_rows"]


@dataclass(frozen=True)
class DistContext:
    """Where a head call runs.

    Attributes:
        world_size: ranks sharing the classes (1 = single process).
        rank: this rank.
        group: process group, ``None`` = the default group.
        gathered: the rows of the call are the all-gathered global batch (as in
            Partial FC), so batch statistics are already global and need no
            all-reduce. ``False`` means each rank holds a different part of
            the batch (data parallel) and statistics are all-reduced.
    """

    world_size: int = 1
    rank: int = 0
    group: Optional[Any] = None
    gathered: bool = True

    @classmethod
    def single(cls) -> "DistContext":
        return cls()

    @classmethod
    def current(cls, group: Optional[Any] = None, gathered: bool = True) -> "DistContext":
        """The default (or given) process group if initialised, else a world of 1."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_world_size(group), dist.get_rank(group), group, gathered)
        return cls(gathered=gathered)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _all_reduce(x: torch.Tensor, ctx: DistContext, op=None) -> torch.Tensor:
    if not ctx.distributed:
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=op or dist.ReduceOp.SUM, group=ctx.group)
    return y


def global_sum(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Value: sum of ``x`` over ranks. Gradient: that of the local ``x``."""
    if not ctx.distributed:
        return x
    total = _all_reduce(x, ctx)
    return x + (total - x).detach()


def global_max(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Elementwise max over ranks, no gradient."""
    return _all_reduce(x.detach(), ctx, dist.ReduceOp.MAX if ctx.distributed else None)


def global_mean_stat(x: torch.Tensor, count: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Mean of a batch statistic (no gradient): ``sum(x) / sum(count)`` over ranks
    unless the rows are already the gathered global batch."""
    x, count = x.detach(), count.detach().to(x.dtype)
    if ctx.distributed and not ctx.gathered:
        both = _all_reduce(torch.stack([x, count]), ctx)
        x, count = both[0], both[1]
    return x / count.clamp_min(1)


class _AllReduceGrad(torch.autograd.Function):
    @staticmethod
    def forward(fctx, x, ctx: DistContext):
        fctx.dctx = ctx
        return x.view_as(x)

    @staticmethod
    def backward(fctx, grad):
        return _all_reduce(grad, fctx.dctx), None


def all_reduce_grad(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Identity whose backward sums the gradient over ranks."""
    if not ctx.distributed:
        return x
    return _AllReduceGrad.apply(x, ctx)


class _AllGatherRows(torch.autograd.Function):
    @staticmethod
    def forward(fctx, x, ctx: DistContext):
        sizes = torch.tensor([x.shape[0]], device=x.device)
        all_sizes = [torch.zeros_like(sizes) for _ in range(ctx.world_size)]
        dist.all_gather(all_sizes, sizes, group=ctx.group)
        n = [int(s) for s in all_sizes]
        width = max(n)
        pad = x.new_zeros((width,) + tuple(x.shape[1:]))
        pad[: x.shape[0]] = x
        parts = [torch.empty_like(pad) for _ in range(ctx.world_size)]
        dist.all_gather(parts, pad.contiguous(), group=ctx.group)
        fctx.dctx, fctx.n = ctx, n
        return torch.cat([p[:k] for p, k in zip(parts, n)])

    @staticmethod
    def backward(fctx, grad):
        grad = _all_reduce(grad.contiguous(), fctx.dctx)
        start = sum(fctx.n[: fctx.dctx.rank])
        return grad[start : start + fctx.n[fctx.dctx.rank]], None


def all_gather_rows(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Concatenate ``x`` (rows may differ per rank) over ranks in rank order;
    the gradient of each block returns to its rank (summed over ranks)."""
    if not ctx.distributed:
        return x
    return _AllGatherRows.apply(x, ctx)


def rank_sizes(n: int, ctx: DistContext) -> List[int]:
    """Rows per rank for a count ``n`` known on every rank (no communication)."""
    return [n // ctx.world_size + int(r < n % ctx.world_size) for r in range(ctx.world_size)]
