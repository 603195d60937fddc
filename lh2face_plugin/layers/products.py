"""Memory-lean products: row statistics of ``a @ b.T`` computed over column blocks.

A head term or a classification layer often needs a row statistic of a large
product: the softmax normaliser of the logits, LH2Face's proxy-proxy soft
maximum, UniTSFace's sum over the class memory. Written densely, each holds an
[R, C] matrix (and its gradient) at full size. The functions here walk the
columns in blocks of about :data:`BLOCK_ELEMENTS` entries, keep only [R]-sized
running statistics between blocks, and recompute each block in the backward
pass, so their memory is a few blocks plus the gradients of the inputs:

- :func:`matmul_logsumexp`: ``lse_i = log sum_j exp(scale * <a_i, b_j>)`` over
  the columns of every class shard (online max/sum, then one all-reduce pair);
- :func:`matmul_rowsum`: ``sum_j fn(<a_i, b_j>, *args)``, this shard's part.

Both take an optional column ``index`` into ``b`` (Partial FC's sampled classes,
gathered block by block instead of copied), a per-row excluded column and a
column mask. Their values follow :mod:`lh2face_plugin.distributed`'s rule:
global value, this shard's part of the gradient.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from ..distributed import DistContext, _all_reduce

__all__ = ["matmul_logsumexp", "matmul_rowsum", "blockwise_head_loss", "column_blocks", "BLOCK_ELEMENTS"]

BLOCK_ELEMENTS = 1 << 19
"""Entries per block on the CPU (2 MiB of float32: blocks stay in cache)."""
CUDA_BLOCK_ELEMENTS = 1 << 24
"""Entries per block on CUDA (64 MiB of float32: few, large kernels)."""


def column_blocks(rows: int, cols: int, block_elements: Optional[int] = None, cuda: bool = False):
    """``(c0, c1)`` column ranges of about ``block_elements / rows`` columns each (default:
    :data:`BLOCK_ELEMENTS`, or :data:`CUDA_BLOCK_ELEMENTS` with ``cuda``)."""
    per = max(1, (block_elements or (CUDA_BLOCK_ELEMENTS if cuda else BLOCK_ELEMENTS)) // max(1, rows))
    for c0 in range(0, cols, per):
        yield c0, min(cols, c0 + per)


def _take(b: torch.Tensor, index: Optional[torch.Tensor], c0: int, c1: int) -> torch.Tensor:
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
    """Bool [R, c1-c0], True where an entry is left out, or None when nothing is."""
    out = None
    if col_mask is not None:
        out = (~col_mask[c0:c1])[None, :].expand_as(block).clone()
    if exclude is not None:
        rows = torch.nonzero((exclude >= c0) & (exclude < c1)).reshape(-1)
        if rows.numel():
            if out is None:
                out = torch.zeros_like(block, dtype=torch.bool)
            out[rows, exclude[rows] - c0] = True
    return out


class _MatmulLogSumExp(torch.autograd.Function):
    @staticmethod
    def forward(fctx, a, b, index, scale, exclude, col_mask, ctx: DistContext, block_elements):
        r = a.shape[0]
        run_max = a.new_full((r,), float("-inf"))
        run_sum = a.new_zeros(r)
        for c0, c1 in column_blocks(r, _num_cols(b, index), block_elements, a.is_cuda):
            s = torch.mm(a, _take(b, index, c0, c1).t()).mul_(scale)
            drop = _exclusion(s, exclude, col_mask, c0, c1)
            if drop is not None:
                s.masked_fill_(drop, float("-inf"))
            new_max = torch.maximum(run_max, s.amax(dim=1))
            shift = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
            run_sum = run_sum * torch.exp(run_max - shift) + torch.exp(s - shift[:, None]).sum(dim=1)
            run_max = new_max
        lse = _combine(run_max, run_sum, ctx)
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
        finite = torch.isfinite(lse)
        lse0 = torch.where(finite, lse, torch.zeros_like(lse))
        g = torch.where(finite, grad, torch.zeros_like(grad)) * fctx.scale
        for c0, c1 in column_blocks(r, _num_cols(b, index), fctx.block_elements, a.is_cuda):
            bb = _take(b, index, c0, c1)
            p = torch.mm(a, bb.t()).mul_(fctx.scale).sub_(lse0[:, None]).exp_().mul_(g[:, None])
            drop = _exclusion(p, exclude, col_mask, c0, c1)
            if drop is not None:
                p.masked_fill_(drop, 0.0)
            if need_a:
                grad_a.addmm_(p, bb)
            if need_b:
                _add_block(grad_b, index, c0, c1, torch.mm(p.t(), a))
        return grad_a, grad_b, None, None, None, None, None, None


def _combine(run_max: torch.Tensor, run_sum: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """log(sum) over shards of per-shard (max, sum of exp(x - max)) pairs; -inf for empty rows."""
    if ctx.sharded:
        glob = _all_reduce(run_max, ctx, torch.distributed.ReduceOp.MAX)
        shift = torch.where(torch.isfinite(glob), glob, torch.zeros_like(glob))
        local = torch.where(torch.isfinite(run_max), run_sum * torch.exp(run_max - shift), torch.zeros_like(run_sum))
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


class _MatmulRowSum(torch.autograd.Function):
    @staticmethod
    def forward(fctx, a, b, index, exclude, col_mask, fn, block_elements, *args):
        r = a.shape[0]
        out = a.new_zeros(r)
        for c0, c1 in column_blocks(r, _num_cols(b, index), block_elements, a.is_cuda):
            y = fn(torch.mm(a, _take(b, index, c0, c1).t()), *args)
            drop = _exclusion(y, exclude, col_mask, c0, c1)
            if drop is not None:
                y = y.masked_fill(drop, 0.0)
            out += y.sum(dim=1)
        fctx.save_for_backward(a, b, *(t for t in (index, exclude, col_mask) if t is not None), *args)
        fctx.flags = (index is not None, exclude is not None, col_mask is not None)
        fctx.fn, fctx.block_elements, fctx.n_args = fn, block_elements, len(args)
        return out

    @staticmethod
    def backward(fctx, grad_rows):
        a, b, *rest = fctx.saved_tensors
        index = rest.pop(0) if fctx.flags[0] else None
        exclude = rest.pop(0) if fctx.flags[1] else None
        col_mask = rest.pop(0) if fctx.flags[2] else None
        args = rest
        need_a, need_b = fctx.needs_input_grad[0], fctx.needs_input_grad[1]
        need_args = fctx.needs_input_grad[7:]
        grad_a = torch.zeros_like(a) if need_a else None
        grad_b = torch.zeros_like(b) if need_b else None
        grad_args = [torch.zeros_like(x) if need else None for x, need in zip(args, need_args)]
        r = a.shape[0]
        for c0, c1 in column_blocks(r, _num_cols(b, index), fctx.block_elements, a.is_cuda):
            bb = _take(b, index, c0, c1)
            with torch.enable_grad():
                g = torch.mm(a, bb.t()).requires_grad_()
                targs = [x.detach().requires_grad_(bool(need)) for x, need in zip(args, need_args)]
                y = fctx.fn(g, *targs)
                drop = _exclusion(y, exclude, col_mask, c0, c1)
                if drop is not None:
                    y = y.masked_fill(drop, 0.0)
                inputs = [g] + [x for x, need in zip(targs, need_args) if need]
                grads = list(torch.autograd.grad(y, inputs, grad_rows[:, None].expand_as(y), allow_unused=True))
            dg = grads.pop(0)
            if dg is not None:
                if need_a:
                    grad_a.addmm_(dg, bb)
                if need_b:
                    _add_block(grad_b, index, c0, c1, torch.mm(dg.t(), a))
            for i, need in enumerate(need_args):
                if need:
                    gi = grads.pop(0)
                    if gi is not None:
                        grad_args[i] += gi
        return (grad_a, grad_b, None, None, None, None, None, *grad_args)


def matmul_rowsum(a: torch.Tensor, b: torch.Tensor, fn: Callable[..., torch.Tensor], args: Sequence[torch.Tensor] = (),
                  *, index: Optional[torch.Tensor] = None, exclude: Optional[torch.Tensor] = None,
                  col_mask: Optional[torch.Tensor] = None, block_elements: Optional[int] = None) -> torch.Tensor:
    """Row sums ``sum_j fn(<a_i, b_j>, *args)`` over this shard's columns, column block by block.

    Args:
        a: [R, D]; b: [C_b, D] (both differentiable).
        fn: elementwise differentiable function of an [R, c] block and ``args``.
        args: tensors ``fn`` depends on (differentiable, e.g. a learned threshold).
        index, exclude, col_mask, block_elements: as in :func:`matmul_logsumexp`.

    Returns:
        [R] this shard's row sums (sum them over shards with
        :func:`~lh2face_plugin.distributed.global_sum`).
    """
    if exclude is not None:
        exclude = exclude.detach().long()
    if col_mask is not None:
        col_mask = col_mask.detach().bool()
    return _MatmulRowSum.apply(a, b, index, exclude, col_mask, fn, block_elements, *args)


# ----------------------------------------------------------------------------- the classification layer

def _normalize_rows(w: torch.Tensor, eps: float = 1e-12):
    """``w / max(|w|, eps)`` row-wise, and the denominators (as ``F.normalize``)."""
    norm = w.norm(dim=1).clamp_min(eps)
    return w / norm[:, None], norm


class _BlockwiseSoftmax(torch.autograd.Function):
    """Global ``lse_i`` of a head's logits and its row terms, over column blocks of the proxies.

    Inputs: normalised rows ``x`` [N, D]; raw proxies ``weight`` (normalised block by block);
    ``scale`` [N] or None (then ``spec["scale"]``); ``target_logit`` [N] (rows with ``tcol >= 0``).
    Outputs: ``lse`` [N] (global, target included) and one [N] row sum per row term (local).
    With ``cache`` the raw cosines are kept ([N, C] float32) and not recomputed in the backward.
    """

    @staticmethod
    def forward(fctx, x, weight, scale, target_logit, index, tcol, thresh, spec, terms, ctx, block_elements,
                mm_dtype, cache, holder):
        n = x.shape[0]
        k = scale[:, None] if scale is not None else spec["scale"]
        run_max = x.new_full((n,), float("-inf"))
        run_sum = x.new_zeros(n)
        sums = [x.new_zeros(n) for _ in terms]
        num_cols = _num_cols(weight, index)
        kept = x.new_empty((n, num_cols)) if cache else None
        for c0, c1 in column_blocks(n, num_cols, block_elements, x.is_cuda):
            raw = _block_product(x, weight, index, c0, c1, mm_dtype)[0]
            if kept is not None:
                kept[:, c0:c1] = raw
            cos = _clamped(raw)[0]
            rows, cols = _targets_in(tcol, c0, c1)
            for acc, (fn, _, col_mask) in zip(sums, terms):
                y = _drop_targets(fn(cos), rows, cols, 0.0)
                if col_mask is not None:
                    y = y * col_mask[c0:c1]
                acc += y.sum(dim=1)
            logit = _drop_targets(_block_logits(cos, k, thresh, spec), rows, cols, float("-inf"))
            new_max = torch.maximum(run_max, logit.amax(dim=1))
            shift = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
            run_sum = run_sum * torch.exp(run_max - shift) + logit.sub_(shift[:, None]).exp_().sum(dim=1)
            run_max = new_max
        tl = torch.where(tcol >= 0, target_logit, torch.full_like(target_logit, float("-inf")))
        new_max = torch.maximum(run_max, tl)
        shift = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
        run_sum = run_sum * torch.exp(run_max - shift) + torch.exp(tl - shift)
        lse = _combine(new_max, run_sum, ctx)
        saved = [x, weight, lse, target_logit, tcol]
        fctx.opt = (scale is not None, thresh is not None, index is not None, kept is not None)
        saved += [t for t in (scale, thresh, index, kept) if t is not None]
        fctx.save_for_backward(*saved)
        fctx.spec, fctx.terms, fctx.block_elements, fctx.mm_dtype = spec, terms, block_elements, mm_dtype
        fctx.holder = holder
        return (lse, *sums)

    @staticmethod
    def backward(fctx, g_lse, *g_terms):
        x, weight, lse, target_logit, tcol, *rest = fctx.saved_tensors
        scale = rest.pop(0) if fctx.opt[0] else None
        thresh = rest.pop(0) if fctx.opt[1] else None
        index = rest.pop(0) if fctx.opt[2] else None
        kept = rest.pop(0) if fctx.opt[3] else None
        spec, terms, mm = fctx.spec, fctx.terms, fctx.mm_dtype
        n = x.shape[0]
        k = scale[:, None] if scale is not None else spec["scale"]
        finite = torch.isfinite(lse)
        lse0 = torch.where(finite, lse, torch.zeros_like(lse))
        g = torch.where(finite, g_lse, torch.zeros_like(g_lse))
        gk = (g * scale if scale is not None else g * spec["scale"])[:, None]
        hard_slope = thresh is not None and (spec["hard_a"] or spec["hard_q"])
        grad_x = torch.zeros_like(x)
        grad_w = torch.zeros_like(weight)
        grad_scale = torch.zeros(n, dtype=x.dtype, device=x.device) if scale is not None else None
        xm = x.to(mm) if mm is not None else x
        for c0, c1 in column_blocks(n, _num_cols(weight, index), fctx.block_elements, x.is_cuda):
            if kept is None:
                raw, wn, wnorm = _block_product(x, weight, index, c0, c1, mm)
            else:
                raw = kept[:, c0:c1]
                wn, wnorm = _normalize_rows(_take(weight, index, c0, c1))
            cos, inside = _clamped(raw, copy=kept is not None)
            rows, cols = _targets_in(tcol, c0, c1)
            prob = _block_logits(cos, k, thresh, spec).sub_(lse0[:, None]).exp_()
            _drop_targets(prob, rows, cols, 0.0)
            if grad_scale is not None:
                grad_scale += torch.einsum("ij,ij->i", prob, cos) * g
            if hard_slope:
                extra = (cos > thresh[:, None]).to(cos.dtype)
                extra.mul_(torch.addcmul(torch.full_like(cos, spec["hard_a"]), cos, torch.full_like(cos, 2.0),
                                         value=spec["hard_q"]) if spec["hard_q"] else spec["hard_a"])
                extra.mul_(prob).mul_(g[:, None])
                dcos = prob.mul_(gk).add_(extra)
            else:
                dcos = prob.mul_(gk)
            for gt, (_, dfn, col_mask) in zip(g_terms, terms):
                if gt is None:
                    continue
                d = _drop_targets(dfn(cos) * gt[:, None], rows, cols, 0.0)
                if col_mask is not None:
                    d = d * col_mask[c0:c1]
                dcos += d
            if inside is not None:
                dcos.mul_(inside)
            if mm is not None:
                dm = dcos.to(mm)
                grad_x += torch.mm(dm, wn.to(mm)).float()
                gwn = torch.mm(dm.t(), xm).float()
            else:
                grad_x.addmm_(dcos, wn)
                gwn = torch.mm(dcos.t(), x)
            _add_block(grad_w, index, c0, c1, gwn.sub_(wn * (gwn * wn).sum(dim=1, keepdim=True)).div_(wnorm[:, None]))
        grad_tl = torch.where((tcol >= 0) & finite, torch.exp(target_logit - lse0) * g, torch.zeros_like(g))
        if fctx.holder is not None:  # handed to _GradientCollector, which adds the sparse row gradients in place
            fctx.holder["grad"] = grad_w
            grad_w = _empty_sparse_like(weight)
        return (grad_x, grad_w, grad_scale, grad_tl, None, None, None, None, None, None, None, None, None, None)


def _block_product(x, weight, index, c0, c1, mm_dtype):
    """(<x_i, w_j/|w_j|> for the block, unclamped; the normalised block; its norms)."""
    wn, wnorm = _normalize_rows(_take(weight, index, c0, c1))
    if mm_dtype is not None:
        return torch.mm(x.to(mm_dtype), wn.to(mm_dtype).t()).float(), wn, wnorm
    return torch.mm(x, wn.t()), wn, wnorm


def _clamped(raw, copy=False):
    """(clamp(raw, -1, 1), the clamp's 0/1 gradient mask or None when nothing was clamped).

    Rounding puts few cosines outside [-1, 1]; one min/max pass spares the clamp and its mask."""
    if raw.numel() == 0:
        return raw, None
    low, high = torch.aminmax(raw)
    if float(low) >= -1.0 and float(high) <= 1.0:
        return raw, None
    inside = ((raw >= -1.0) & (raw <= 1.0)).to(raw.dtype)
    return (raw.clamp(-1.0, 1.0) if copy else raw.clamp_(-1.0, 1.0)), inside


def _targets_in(tcol, c0, c1):
    """(rows, columns relative to c0) of the target entries inside the block."""
    rows = torch.nonzero((tcol >= c0) & (tcol < c1)).reshape(-1)
    return rows, tcol[rows] - c0


def _drop_targets(block, rows, cols, value):
    if rows.numel():
        block[rows, cols] = value
    return block


def _block_logits(cos, k, thresh, spec):
    logit = cos * k
    if thresh is not None and (spec["hard_a"] or spec["hard_q"] or spec["hard_b"]):
        hard = (cos > thresh[:, None]).to(cos.dtype)
        if spec["hard_q"]:
            bonus = torch.addcmul(torch.full_like(cos, spec["hard_b"]), cos, cos, value=spec["hard_q"])
            bonus.add_(cos, alpha=spec["hard_a"])
        else:
            bonus = cos * spec["hard_a"]
            if spec["hard_b"]:
                bonus.add_(spec["hard_b"])
        logit.addcmul_(bonus, hard)
    return logit


def _empty_sparse_like(t: torch.Tensor) -> torch.Tensor:
    return torch.sparse_coo_tensor(torch.zeros((2, 0), dtype=torch.long, device=t.device),
                                   torch.zeros((0,) + tuple(t.shape[2:]), dtype=t.dtype, device=t.device),
                                   t.shape, check_invariants=False)


class _GradientCollector(torch.autograd.Function):
    """Identity on the proxies whose backward returns one dense [C, D] gradient.

    The blockwise layer and the row gathers (target proxies, L_pp's proxies) all read the
    proxies through this node. The layer leaves its dense gradient in ``holder`` and returns an
    empty sparse one; the gathers return sparse row gradients; here their sum is added to the
    layer's buffer in place. A plain gather would add a second [C, D] buffer to the peak."""

    @staticmethod
    def forward(fctx, weight, holder):
        fctx.holder = holder
        return weight.view_as(weight)

    @staticmethod
    def backward(fctx, grad):
        dense = fctx.holder.pop("grad", None)
        if dense is None:
            return (grad.to_dense() if grad.is_sparse else grad), None
        return dense.add_(grad), None


def _rows(weight: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``weight[rows]`` with a sparse gradient (see :class:`_GradientCollector`)."""
    if weight.requires_grad and torch.is_grad_enabled():
        return torch.nn.functional.embedding(rows, weight, sparse=True)
    return weight[rows]


def _require_finite_lse(lse: torch.Tensor, weight: torch.Tensor, index: Optional[torch.Tensor]) -> None:
    """NaN/+Inf in the logsumexp (the embeddings, norms and target cosines were checked before):
    name the class proxy of this shard that caused it, or say it is on another shard."""
    bad = torch.isnan(lse) | (lse == float("inf"))
    if not bool(bad.any()):
        return
    with torch.no_grad():
        w = weight if index is None else weight[index]
        cols = torch.nonzero((~torch.isfinite(w)).any(1)).reshape(-1)
    if cols.numel():
        raise FloatingPointError(f"non-finite class proxy at column {int(cols[0])} (NaN/Inf in the FC weight). "
                                 "Disable this check with check_inputs=False.")
    raise FloatingPointError(f"non-finite logits at row {int(torch.nonzero(bad)[0])}: a class proxy on another shard "
                             "holds NaN/Inf (that rank names its column). Disable this check with check_inputs=False.")


def blockwise_head_loss(head, x: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, *,
                        norms: Optional[torch.Tensor] = None, index: Optional[torch.Tensor] = None,
                        ctx: Optional[DistContext] = None, block_elements: Optional[int] = None,
                        matmul_dtype: Optional[torch.dtype] = None, cache_cosine: bool = False):
    """A head's loss, ``mean_i (lse_i - out_iy) + sum(terms)``, without the [N, C] logits.

    The cosines ``clamp(<x_i, w_j / |w_j|>, -1, 1)`` are formed block by block, turned into
    the head's logits (its :class:`~.base.LogitSpec`), folded into an online
    logsumexp and the row terms, and recomputed block by block in the backward pass.
    Peak memory: the gradient of ``weight`` plus a few [N, block] blocks. The
    result equals the dense evaluation (:func:`.fused.evaluate_plan` followed by
    the sharded cross-entropy) to rounding.

    Args:
        head: a :class:`~.base.Head` implementing ``plan``.
        x: [N, D] normalised embeddings (the gathered batch), differentiable.
        weight: [C_all, D] raw class proxies of this shard (differentiable).
        labels: [N] int64 column on this shard (into ``index`` when sampling) or -1.
        norms: [N] raw feature norms, for heads that need them.
        index: optional [C] int64 sampled rows of ``weight`` (Partial FC's ``weight_index``).
        ctx: the class shards.
        block_elements: entries per block.
        matmul_dtype: compute the products in this dtype (fp16/bf16 training), the rest in float32.
        cache_cosine: keep the [N, C] cosines (float32) for the backward instead of
            recomputing each block: one product less, one [N, C] tensor more.

    Returns:
        ``(loss, parts)``: the scalar loss (global value, local gradient) and its
        detached parts by name (``ce``, the head's terms and statistics).
    """
    from .base import HeadResult  # noqa: F401  (documented return type of the dense twin)

    ctx = ctx if ctx is not None else DistContext.single()
    labels = labels.reshape(-1).long()
    n = x.shape[0]
    holder = None
    if weight.requires_grad and torch.is_grad_enabled():
        holder = {}
        weight = _GradientCollector.apply(weight, holder)
    num_cols = _num_cols(weight, index)
    pos_rows = torch.nonzero(labels >= 0).reshape(-1)
    cols = labels[pos_rows]
    rows_w = cols if index is None else index[cols]
    wt, _ = _normalize_rows(_rows(weight, rows_w))
    if matmul_dtype is not None:
        tc = (x[pos_rows].to(matmul_dtype) * wt.to(matmul_dtype)).float().sum(dim=1)
    else:
        tc = (x[pos_rows] * wt).sum(dim=1)
    tc = tc.clamp(-1.0, 1.0)
    weights = None
    if head.needs_weights:
        weights = _normalize_rows(weight if index is None else weight[index])[0]
    def proxy_fn(c: torch.Tensor) -> torch.Tensor:
        return _normalize_rows(_rows(weight, c if index is None else index[c]))[0]

    inp = head.inputs(labels, num_cols, norms=norms, embeddings=x, weights=weights, class_index=index, ctx=ctx,
                      target_cosine=tc, proxy_fn=proxy_fn)
    plan = head.plan(inp)
    spec = plan.logits
    target_logit = x.new_zeros(n).index_put((inp.pos,), spec.target_logits(inp.target_cosine).to(x.dtype))
    tcol = torch.full((n,), -1, dtype=torch.long, device=x.device)
    tcol[inp.pos] = inp.target
    scale = spec.scale if isinstance(spec.scale, torch.Tensor) else None
    floats = {"scale": float(spec.scale) if scale is None else None, "hard_a": float(spec.hard_a),
              "hard_q": float(spec.hard_q), "hard_b": float(spec.hard_b)}
    thresh = spec.thresh.detach().to(x.dtype) if spec.thresh is not None else None
    row_terms = list(plan.row_terms.items())
    term_specs = [(t.fn, t.dfn, None if t.col_mask is None else t.col_mask.detach().bool()) for _, t in row_terms]
    lse, *sums = _BlockwiseSoftmax.apply(x, weight, scale, target_logit, index, tcol, thresh, floats, term_specs,
                                        ctx, block_elements, matmul_dtype, bool(cache_cosine), holder)
    if head.check_inputs:
        _require_finite_lse(lse, weight, index)
    denom = max(1, n)
    from ..distributed import global_sum

    ce = (lse.sum() - global_sum(target_logit[inp.pos].sum(), ctx)) / denom
    terms = dict(plan.terms)
    for (name, t), rows in zip(row_terms, sums):
        terms[name] = t.weight * global_sum(rows.sum(), ctx) / denom
    loss = ce
    for v in terms.values():
        loss = loss + v
    parts = {**{k: v.detach() for k, v in terms.items()}, **{k: v.detach() for k, v in plan.stats.items()},
             "ce": ce.detach()}
    return loss, parts
