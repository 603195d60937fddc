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
from typing import Any, Optional

import torch
import torch.distributed as dist

__all__ = [
    "DistContext", "global_sum", "global_mean_stat", "batch_total", "reduce_target",
    "all_reduce_grad", "all_gather_rows",
]


@dataclass(frozen=True)
class DistContext:
    """Where a head call runs.

    Attributes:
        world_size: ranks sharing the classes (1 = single process).
        rank: this rank.
        group: process group, ``None`` = the default group.
        gathered: ``True`` (model parallel, Partial FC): every rank sees the
            same all-gathered rows and its own shard of the classes; losses
            are summed over shards, batch statistics are already global.
            ``False`` (data parallel): each rank has its own rows and all the
            classes; losses stay local, batch statistics are all-reduced.
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

    @property
    def sharded(self) -> bool:
        """Classes are split over ranks (model parallel)."""
        return self.world_size > 1 and self.gathered


def _all_reduce(x: torch.Tensor, ctx: DistContext, op=None) -> torch.Tensor:
    if not ctx.distributed:
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=op or dist.ReduceOp.SUM, group=ctx.group)
    return y


def global_sum(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Value: sum of ``x`` over class shards. Gradient: that of the local ``x``.

    Identity unless the classes are sharded (``ctx.sharded``)."""
    if not ctx.sharded:
        return x
    total = _all_reduce(x, ctx)
    return x + (total - x).detach()


def reduce_target(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """[N] values known only on the rank owning each row's target (0 elsewhere),
    made known on every rank (no gradient)."""
    if not ctx.sharded:
        return values.detach()
    return _all_reduce(values.detach(), ctx)


def batch_total(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum of per-rank batch statistics (no gradient) over data-parallel ranks; the
    value itself when the rows are already the gathered global batch."""
    x = x.detach()
    if ctx.distributed and not ctx.gathered:
        x = _all_reduce(x, ctx)
    return x


def global_mean_stat(x: torch.Tensor, count: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Mean of a batch statistic (no gradient): ``sum(x) / sum(count)`` over ranks
    unless the rows are already the gathered global batch; 0 for an empty batch."""
    both = batch_total(torch.stack([x.detach(), count.detach().to(x.dtype)]), ctx)
    return both[0] / both[1].clamp_min(1)


class _AllReduceGrad(torch.autograd.Function):
    @staticmethod
    def forward(fctx, x, ctx: DistContext):
        fctx.dctx = ctx
        return x.view_as(x)

    @staticmethod
    def backward(fctx, grad):
        return _all_reduce(grad, fctx.dctx), None


def all_reduce_grad(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Identity whose backward sums the gradient over class shards."""
    if not ctx.sharded:
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
    """Concatenate ``x`` (rows may differ per rank) over class shards in rank
    order; the gradient of each block returns to its rank (summed over ranks)."""
    if not ctx.sharded:
        return x
    return _AllGatherRows.apply(x, ctx)
