"""Memory-lean products: row statistics of ``a @ b.T`` computed over column blocks.

A head term often needs a row statistic of a large product, e.g. LH2Face's
proxy-proxy soft maximum or UniTSFace's initial threshold. Written densely, each holds an
[R, C] matrix (and its gradient) at full size. The functions here walk the
columns in blocks of about :data:`BLOCK_ELEMENTS` entries, keep only [R]-sized
running statistics between blocks, and recompute each block in the backward
pass, so their memory is a few blocks plus the gradients of the inputs:

- :func:`matmul_logsumexp`: ``lse_i = log sum_j exp(scale * <a_i, b_j>)`` over
  the columns of every class shard (online max/sum, then one all-reduce pair).

The head engine (:mod:`.engine`) walks the class columns the same way. It takes an optional
column ``index`` into ``b`` (Partial FC's sampled classes, gathered block by block instead of copied), a per-row excluded column and a
column mask. Their values follow :mod:`lh2face_plugin.distributed`'s rule:
global value, this shard's part of the gradient.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..distributed import DistContext, _all_reduce

__all__ = ["matmul_logsumexp", "column_blocks", "online_logsumexp", "combine_logsumexp", "take_columns",
           "normalize_rows", "block_elements_for", "TargetSlots", "BLOCK_ELEMENTS", "CUDA_BLOCK_ELEMENTS"]

BLOCK_ELEMENTS = 1 << 19
"""Entries per block on the CPU (2 MiB of float32: blocks stay in cache)."""
CUDA_BLOCK_ELEMENTS = 1 << 24
"""Most entries per block on CUDA (64 MiB of float32: few, large kernels)."""
BLOCK_TEMPORARIES = 6
"""[R, c] float32 temporaries alive at once while a block is evaluated (products, cosines, logits or their
gradient, the hard-negative mask, a row term's output and its gradient)."""
CUDA_BLOCK_MEMORY_FRACTION = 1 / 16
"""Share of the device's memory that the temporaries of one block may take."""


def block_elements_for(device: torch.device, block_elements: Optional[int] = None) -> int:
    """Entries per block on ``device``: ``block_elements`` when given; on the CPU
    :data:`BLOCK_ELEMENTS` (cache-sized); on CUDA the most entries whose
    :data:`BLOCK_TEMPORARIES` float32 temporaries fit in :data:`CUDA_BLOCK_MEMORY_FRACTION` of the
    device's memory, at most :data:`CUDA_BLOCK_ELEMENTS`. Read once per call, outside the block loop."""
    if block_elements:
        return int(block_elements)
    device = torch.device(device)
    if device.type != "cuda":
        return BLOCK_ELEMENTS
    total = torch.cuda.get_device_properties(device).total_memory
    return int(max(1 << 16, min(CUDA_BLOCK_ELEMENTS, total * CUDA_BLOCK_MEMORY_FRACTION // (4 * BLOCK_TEMPORARIES))))


def column_blocks(rows: int, cols: int, block_elements: Optional[int] = None, cuda: bool = False):
    """``(c0, c1)`` column ranges of about ``block_elements / rows`` columns each (default:
    :data:`BLOCK_ELEMENTS`, or :data:`CUDA_BLOCK_ELEMENTS` with ``cuda``)."""
    per = max(1, (block_elements or (CUDA_BLOCK_ELEMENTS if cuda else BLOCK_ELEMENTS)) // max(1, rows))
    for c0 in range(0, cols, per):
        yield c0, min(cols, c0 + per)


class TargetSlots:
    """One excluded column per row (``-1``: none), found in a block without a host sync.

    ``cols`` [R] int64 holds each row's column in the call; for the block ``c0:c1``, :meth:`fill_`
    writes ``value`` at ``(i, cols[i] - c0)`` of the rows whose column falls inside, with one
    gather and one scatter of [R, 1] (no ``nonzero``, no data-dependent shape)."""

    __slots__ = ("cols",)

    def __init__(self, cols: torch.Tensor):
        self.cols = cols

    def rows(self, r: slice) -> "TargetSlots":
        return TargetSlots(self.cols[r])

    def fill_(self, block: torch.Tensor, c0: int, c1: int, value: float) -> torch.Tensor:
        """``block[i, cols[i] - c0] = value`` where ``c0 <= cols[i] < c1``, in place; returns ``block``."""
        if block.numel() == 0:
            return block
        local = self.cols[:, None] - c0
        inside = (local >= 0) & (local < c1 - c0)
        slot = local.clamp(0, c1 - c0 - 1)
        kept = block.gather(1, slot).masked_fill_(inside, value)
        return block.scatter_(1, slot, kept)


def normalize_rows(w: torch.Tensor, eps: float = 1e-12):
    """``w / max(|w|, eps)`` row-wise, and the denominators (as ``F.normalize``)."""
    norm = w.norm(dim=1).clamp_min(eps)
    return w / norm[:, None], norm


def take_columns(b: torch.Tensor, index: Optional[torch.Tensor], c0: int, c1: int) -> torch.Tensor:
    """Rows ``c0:c1`` of the call's columns of ``b`` (through ``index`` when sampled)."""
    return b[c0:c1] if index is None else b[index[c0:c1]]


def _add_block(grad: torch.Tensor, index: Optional[torch.Tensor], c0: int, c1: int, block: torch.Tensor) -> None:
    """Add a block's gradient to the rows it came from (through ``index`` when sampled)."""
    if index is None:
        grad[c0:c1] += block
    else:
        grad.index_add_(0, index[c0:c1], block)


def _num_cols(b: torch.Tensor, index: Optional[torch.Tensor]) -> int:
    return b.shape[0] if index is None else index.shape[0]


def _exclusion(block: torch.Tensor, exclude: Optional[torch.Tensor], col_mask: Optional[torch.Tensor],
               c0: int, c1: int) -> Optional[torch.Tensor]:
    """Bool [R, c1-c0], True where an entry is left out, or None when nothing is (no host sync)."""
    out = None
    if col_mask is not None:
        out = (~col_mask[c0:c1])[None, :].expand_as(block).clone()
    if exclude is not None:
        if out is None:
            out = torch.zeros_like(block, dtype=torch.bool)
        TargetSlots(exclude).fill_(out, c0, c1, True)
    return out


class _MatmulLogSumExp(torch.autograd.Function):
    @staticmethod
    def forward(fctx, a, b, index, scale, exclude, col_mask, ctx: DistContext, block_elements):
        r = a.shape[0]
        run_max = a.new_full((r,), float("-inf"))
        run_sum = a.new_zeros(r)
        for c0, c1 in column_blocks(r, _num_cols(b, index), block_elements_for(a.device, block_elements)):
            s = torch.mm(a, take_columns(b, index, c0, c1).t()).mul_(scale)
            drop = _exclusion(s, exclude, col_mask, c0, c1)
            if drop is not None:
                s.masked_fill_(drop, float("-inf"))
            run_max, run_sum = online_logsumexp(run_max, run_sum, s)
        lse = combine_logsumexp(run_max, run_sum, ctx)
        fctx.save_for_backward(a, b, lse, *(t for t in (index, exclude, col_mask) if t is not None))
        fctx.flags = (index is not None, exclude is not None, col_mask is not None)
        fctx.scale, fctx.block_elements = scale, block_elements
        return lse

    @staticmethod
    def backward(fctx, grad):
        a, b, lse, *rest = fctx.saved_tensors
        index = rest.pop(0) if fctx.flags[0] else None
        exclude = rest.pop(0) if fctx.flags[1] else None
        col_mask = rest.pop(0) if fctx.flags[2] else None
        need_a, need_b = fctx.needs_input_grad[0], fctx.needs_input_grad[1]
        grad_a = torch.zeros_like(a) if need_a else None
        grad_b = torch.zeros_like(b) if need_b else None
        r = a.shape[0]
        live = lse != float("-inf")
        lse0 = torch.where(live, lse, torch.zeros_like(lse))
        g = torch.where(live, grad, torch.zeros_like(grad)) * fctx.scale
        for c0, c1 in column_blocks(r, _num_cols(b, index), block_elements_for(a.device, fctx.block_elements)):
            bb = take_columns(b, index, c0, c1)
            p = torch.mm(a, bb.t()).mul_(fctx.scale).sub_(lse0[:, None]).exp_().mul_(g[:, None])
            drop = _exclusion(p, exclude, col_mask, c0, c1)
            if drop is not None:
                p.masked_fill_(drop, 0.0)
            if need_a:
                grad_a.addmm_(p, bb)
            if need_b:
                _add_block(grad_b, index, c0, c1, torch.mm(p.t(), a))
        return grad_a, grad_b, None, None, None, None, None, None


def online_logsumexp(run_max: torch.Tensor, run_sum: torch.Tensor, block: torch.Tensor):
    """Fold an [R, c] block into the running (max, sum of exp(x - max)) of each row; ``block`` is
    overwritten. Rows still without a finite entry keep max -inf and sum 0."""
    new_max = torch.maximum(run_max, block.amax(dim=1)) if block.shape[1] else run_max
    shift = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
    run_sum = run_sum * torch.exp(run_max - shift) + block.sub_(shift[:, None]).exp_().sum(dim=1)
    return new_max, run_sum


def combine_logsumexp(run_max: torch.Tensor, run_sum: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """log(sum) over shards of per-shard (max, sum of exp(x - max)) pairs; -inf for empty rows, NaN on every
    rank for a row that met a NaN on any shard."""
    if ctx.sharded:
        glob = _all_reduce(run_max, ctx, torch.distributed.ReduceOp.MAX)
        shift = torch.where(torch.isfinite(glob), glob, torch.zeros_like(glob))
        local = torch.where(run_max == float("-inf"), torch.zeros_like(run_sum), run_sum * torch.exp(run_max - shift))
        total = _all_reduce(local, ctx)
    else:
        shift = torch.where(torch.isfinite(run_max), run_max, torch.zeros_like(run_max))
        total = run_sum
    return torch.log(total) + shift


def matmul_logsumexp(a: torch.Tensor, b: torch.Tensor, scale: float = 1.0, *, index: Optional[torch.Tensor] = None,
                     exclude: Optional[torch.Tensor] = None, col_mask: Optional[torch.Tensor] = None,
                     ctx: Optional[DistContext] = None, block_elements: Optional[int] = None) -> torch.Tensor:
    """Row-wise ``logsumexp_j scale * <a_i, b_j>`` over all class shards, column block by block.

    Args:
        a: [R, D] rows (differentiable).
        b: [C_b, D] this shard's columns (differentiable).
        scale: a float multiplying the products.
        index: optional [C] int64: column j is ``b[index[j]]``.
        exclude: optional [R] int64: column left out of row i (-1: none).
        col_mask: optional [C] bool: False columns are left out of every row.
        ctx: the shards (default: a world of 1).
        block_elements: entries per block (default :data:`BLOCK_ELEMENTS`).

    Returns:
        [R] float tensor, identical on every rank; ``-inf`` for a row with no column.
    """
    ctx = ctx if ctx is not None else DistContext.single()
    if exclude is not None:
        exclude = exclude.detach().long()
    if col_mask is not None:
        col_mask = col_mask.detach().bool()
    return _MatmulLogSumExp.apply(a, b, index, float(scale), exclude, col_mask, ctx, block_elements)
