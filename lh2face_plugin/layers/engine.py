"""The head engine: a head's loss evaluated over column blocks, for every layer.

A head describes one call (:class:`~.contract.HeadPlan`): its logits
(:class:`~.contract.LogitSpec`), ready terms and row terms
(:class:`~.contract.RowTerm`). :func:`head_loss` turns that description into

    loss = mean_i (lse_i - out_iy) + sum(terms)

walking the class columns in blocks: each block of cosines is turned into logits
(:mod:`.formula`), folded into an online logsumexp, and fed to the row terms; the backward
pass recomputes each block. The cosines come from :class:`Columns`: a dense [N, C] matrix
(the classifier and the dense Partial FC, :mod:`.dense`) or the products of the normalised
embeddings with raw class proxies, never held whole (:mod:`.blockwise`). Both go through
the same code, so the dense and the blockwise layers agree to rounding, and neither writes
the [N, C] logits: the dense layer's extra memory is the gradient of the cosines.

Values follow :mod:`lh2face_plugin.distributed`'s rule: the loss is global on every rank,
its gradient this rank's part.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..distributed import DistContext, global_sum
from ..finite import raise_nonfinite
from .contract import HeadInputs, HeadPlan, Planner
from .precision import no_autocast
from .formula import hard_mask, negative_logits, rows_of, times_slope_
from .products import (TargetSlots, block_elements_for, column_blocks, combine_logsumexp, normalize_rows,
                       online_logsumexp, take_columns)

__all__ = ["Columns", "head_loss", "row_sums", "plan_terms", "LossParts"]

LossParts = Dict[str, torch.Tensor]


@dataclass
class Columns:
    """The class columns of one call and where their cosines come from.

    Exactly one of ``cosine`` (dense) and ``weight`` (products) is given.

    Attributes:
        cosine: [N, C] clamped cosines (differentiable).
        weight: [C_all, D] raw class proxies; the cosines are ``clamp(<x_i, w_j / |w_j|>, -1, 1)``.
        index: optional [C] int64: column j is local class ``index[j]`` (Partial FC's sampling).
        matmul_dtype: products in this dtype (fp16/bf16 training), the rest in float32.
        cache: keep the [N, C] products for the backward instead of recomputing them.
        block_elements: entries per block (default :data:`.products.BLOCK_ELEMENTS`).
        holder: a dict that receives the proxies' dense gradient (see :mod:`.blockwise`).
    """

    cosine: Optional[torch.Tensor] = None
    weight: Optional[torch.Tensor] = None
    index: Optional[torch.Tensor] = None
    matmul_dtype: Optional[torch.dtype] = None
    cache: bool = False
    block_elements: Optional[int] = None
    holder: Optional[dict] = None

    @property
    def num(self) -> int:
        if self.cosine is not None:
            return self.cosine.shape[1]
        return self.weight.shape[0] if self.index is None else self.index.shape[0]


def _clamped(raw: torch.Tensor, copy: bool = False, mask: bool = False):
    """(clamp(raw, -1, 1), the bool mask of the entries the clamp cut, whose gradient is 0, or None
    without ``mask``). Always the same ops, whatever the values: no host sync."""
    outside = raw.abs() > 1.0 if mask else None
    return (raw.clamp(-1.0, 1.0) if copy else raw.clamp_(-1.0, 1.0)), outside


def _product(x, weight, index, c0, c1, mm_dtype):
    """(<x_i, w_j/|w_j|> for the block, unclamped; the normalised block; its norms)."""
    wn, wnorm = normalize_rows(take_columns(weight, index, c0, c1))
    if mm_dtype is not None:
        return torch.mm(x.to(mm_dtype), wn.to(mm_dtype).t()).float(), wn, wnorm
    return torch.mm(x, wn.t()), wn, wnorm


@dataclass
class _Call:
    """What the autograd function needs besides its differentiable inputs."""

    columns: Columns
    tcol: torch.Tensor
    thresh: Optional[torch.Tensor]
    scale: float
    hard: Tuple[float, float, float]
    terms: List[tuple]
    ctx: DistContext
    softmax: bool


def _term_rows(term, g, slots: TargetSlots, c0, c1, args) -> torch.Tensor:
    """A row term's [R] row sums on a block: ``fn(g, *args)`` without the targets and masked columns."""
    fn, col_mask = term[0], term[1]
    y = fn(g, *args)
    if y is g:
        y = y.clone()
    if col_mask is not None:
        y.mul_(col_mask[c0:c1])
    return slots.fill_(y, c0, c1, 0.0).sum(dim=1)


def _term_grads(term, y, inputs, grad_rows, slots: TargetSlots, c0, c1, exact: bool):
    """Gradients of a row term's block sum w.r.t. ``inputs`` (the block first): each entry weighted
    by its row's gradient, the targets and masked columns left out. ``exact=False`` (only the
    block's gradient is needed) differentiates the whole block and zeroes those entries after."""
    col_mask = term[1]
    w = grad_rows[:, None].expand(y.shape)
    if exact:
        w = w * col_mask[c0:c1] if col_mask is not None else w.contiguous()
        slots.fill_(w, c0, c1, 0.0)
    grads = list(torch.autograd.grad(y, inputs, w, allow_unused=True))
    if not exact and grads[0] is not None:
        if col_mask is not None:
            grads[0].mul_(col_mask[c0:c1])
        slots.fill_(grads[0], c0, c1, 0.0)
    return grads


def _blocks(cols: Columns, n: int, device: torch.device, products_too: bool):
    """``(rows, c0, c1)`` blocks of about :func:`.products.block_elements_for` entries: whole rows of
    a dense matrix (contiguous), or column ranges for every row where products are formed (the
    proxies', or a row term's other matrix). The plan depends on shapes only, never on values."""
    budget = block_elements_for(device, cols.block_elements)
    if cols.cosine is not None and not products_too:
        per = max(1, budget // max(1, cols.num))
        for r0 in range(0, n, per):
            yield slice(r0, min(n, r0 + per)), 0, cols.num
    else:
        for c0, c1 in column_blocks(n, cols.num, budget):
            yield slice(0, n), c0, c1


class _HeadBlocks(torch.autograd.Function):
    """Outputs: the global logsumexp of the head's logits without the target entries, plus the
    target logit (``softmax``), and this shard's row sum of each row term."""

    @staticmethod
    def forward(fctx, call: _Call, cosine, x, weight, scale, target_logit, *term_args):
        with no_autocast(target_logit.device):
            return _HeadBlocks._forward(fctx, call, cosine, x, weight, scale, target_logit, *term_args)

    @staticmethod
    def backward(fctx, g_lse, *g_terms):
        with no_autocast(fctx.device):
            return _HeadBlocks._backward(fctx, g_lse, *g_terms)

    @staticmethod
    def _forward(fctx, call: _Call, cosine, x, weight, scale, target_logit, *term_args):
        cols = call.columns
        n = target_logit.shape[0]
        k = scale if scale is not None else call.scale
        a, q, b = call.hard
        run_max = target_logit.new_full((n,), float("-inf"))
        run_sum = target_logit.new_zeros(n)
        sums = [target_logit.new_zeros(n) for _ in call.terms]
        args = _split(term_args, call.terms)
        kept = target_logit.new_empty((n, cols.num)) if cols.cache and cosine is None else None
        slots = TargetSlots(call.tcol)
        for r, c0, c1 in _blocks(cols, n, target_logit.device, any(t[2] is not None for t in call.terms)):
            if cosine is not None:
                cos = cosine[r, c0:c1]
            else:
                raw = _product(x, weight, cols.index, c0, c1, cols.matmul_dtype)[0]
                if kept is not None:
                    kept[:, c0:c1] = raw
                cos = _clamped(raw)[0]
            sr = slots.rows(r)
            for acc, term, targs in zip(sums, call.terms, args):
                g = cos if term[2] is None else torch.mm(x[r], take_columns(term[2], cols.index, c0, c1).t())
                acc[r] += _term_rows(term, g, sr, c0, c1, targs)
            if call.softmax:
                logit = negative_logits(cos, rows_of(k, r), rows_of(call.thresh, r), a, q, b)
                sr.fill_(logit, c0, c1, float("-inf"))
                run_max[r], run_sum[r] = online_logsumexp(run_max[r], run_sum[r], logit)
        if call.softmax:
            tl = torch.where(call.tcol >= 0, target_logit, torch.full_like(target_logit, float("-inf")))
            run_max, run_sum = online_logsumexp(run_max, run_sum, tl[:, None].clone())
            lse = combine_logsumexp(run_max, run_sum, call.ctx)
        else:
            lse = target_logit.new_zeros(n)
        fctx.call, fctx.device = call, target_logit.device
        fctx.save_for_backward(cosine, x, weight, scale, target_logit, lse, kept, *term_args)
        return (lse, *sums)

    @staticmethod
    def _backward(fctx, g_lse, *g_terms):
        call = fctx.call
        cols = call.columns
        cosine, x, weight, scale, target_logit, lse, kept, *term_args = fctx.saved_tensors
        args = _split(term_args, call.terms)
        need = fctx.needs_input_grad
        n = target_logit.shape[0]
        k = scale if scale is not None else call.scale
        a, q, b = call.hard
        live = lse != float("-inf")   # a row without any column has no softmax; NaN flows on (GradScaler)
        lse0 = torch.where(live, lse, torch.zeros_like(lse))
        g = torch.where(live, g_lse, torch.zeros_like(g_lse)) if g_lse is not None else None
        softmax = call.softmax and g is not None
        grad_cos = torch.empty_like(cosine) if cosine is not None and need[1] else None
        grad_x = torch.zeros_like(x) if x is not None and need[2] else None
        grad_w = None
        if weight is not None and need[3]:  # every row is written once when no column is sampled
            grad_w = torch.empty_like(weight) if cols.index is None else torch.zeros_like(weight)
        grad_scale = torch.zeros_like(scale) if scale is not None and need[4] and softmax else None
        arg_need = _split(need[6:], call.terms)
        grad_args = [[torch.zeros_like(t) if nd else None for t, nd in zip(ta, tn)] for ta, tn in zip(args, arg_need)]
        xm = x.to(cols.matmul_dtype) if cosine is None and cols.matmul_dtype is not None else x
        slots = TargetSlots(call.tcol)
        for r, c0, c1 in _blocks(cols, n, target_logit.device, any(t[2] is not None for t in call.terms)):
            outside = wn = None
            if cosine is not None:
                cos = cosine[r, c0:c1]
            else:
                if kept is None:
                    raw, wn, wnorm = _product(x, weight, cols.index, c0, c1, cols.matmul_dtype)
                else:
                    raw = kept[:, c0:c1]
                    wn, wnorm = normalize_rows(take_columns(weight, cols.index, c0, c1))
                cos, outside = _clamped(raw, copy=kept is not None, mask=True)
            sr = slots.rows(r)
            kr, th = rows_of(k, r), rows_of(call.thresh, r)
            if softmax:
                hard = hard_mask(cos, th, a, q, b)
                dcos = negative_logits(cos, kr, th, a, q, b, hard).sub_(lse0[r, None]).exp_()
                sr.fill_(dcos, c0, c1, 0.0)
                if grad_scale is not None:
                    grad_scale[r] += torch.mul(dcos, cos).sum(dim=1).mul_(g[r])
                if hard is None:
                    dcos.mul_(g[r, None] * kr)
                else:
                    times_slope_(dcos.mul_(g[r, None]), cos, kr, th, a, q, hard)
            else:
                dcos = torch.zeros_like(cos)
            for gt, term, targs, tneed, tgrads in zip(g_terms, call.terms, args, arg_need, grad_args):
                if gt is None:
                    continue
                other = None if term[2] is None else take_columns(term[2], cols.index, c0, c1)
                base = cos if other is None else torch.mm(x[r], other.t())
                with torch.enable_grad():
                    gg = base.detach().requires_grad_()
                    targ = [t.detach().requires_grad_(bool(nd)) for t, nd in zip(targs, tneed)]
                    y = term[0](gg, *targ)
                    inputs = [gg] + [t for t, nd in zip(targ, tneed) if nd]
                    grads = _term_grads(term, y, inputs, gt[r], sr, c0, c1, exact=len(inputs) > 1)
                dg = grads.pop(0)
                if dg is not None:
                    if other is None:
                        dcos += dg
                    elif grad_x is not None:
                        grad_x[r] += torch.mm(dg, other)
                for i, nd in enumerate(tneed):
                    if nd:
                        gi = grads.pop(0)
                        if gi is not None:
                            tgrads[i] += gi
            if cosine is not None:
                if grad_cos is not None:
                    grad_cos[r, c0:c1] = dcos
                continue
            if outside is not None:
                dcos.masked_fill_(outside, 0.0)
            if cols.matmul_dtype is not None:
                dm = dcos.to(cols.matmul_dtype)
                if grad_x is not None:
                    grad_x += torch.mm(dm, wn.to(cols.matmul_dtype)).float()
                gwn = torch.mm(dm.t(), xm).float()
            else:
                if grad_x is not None:
                    grad_x.addmm_(dcos, wn)
                gwn = torch.mm(dcos.t(), x)
            if grad_w is not None:
                gwn.sub_(wn * (gwn * wn).sum(dim=1, keepdim=True)).div_(wnorm[:, None])
                if cols.index is None:
                    grad_w[c0:c1] = gwn
                else:
                    grad_w.index_add_(0, cols.index[c0:c1], gwn)
        grad_tl = None
        if softmax and need[5]:
            grad_tl = torch.where((call.tcol >= 0) & live, torch.exp(target_logit - lse0) * g, torch.zeros_like(g))
        if grad_w is not None and cols.holder is not None:
            cols.holder["grad"] = grad_w
            grad_w = _empty_sparse_like(weight)
        flat = [t for group in grad_args for t in group]
        return (None, grad_cos, grad_x, grad_w, grad_scale, grad_tl, *flat)


def _split(flat: Sequence, terms: List[tuple]) -> List[list]:
    out, i = [], 0
    for term in terms:
        out.append(list(flat[i:i + term[3]]))
        i += term[3]
    return out


def _empty_sparse_like(t: torch.Tensor) -> torch.Tensor:
    return torch.sparse_coo_tensor(torch.zeros((2, 0), dtype=torch.long, device=t.device),
                                   torch.zeros((0,) + tuple(t.shape[2:]), dtype=t.dtype, device=t.device),
                                   t.shape, check_invariants=False)


def _run(plan: HeadPlan, inp: HeadInputs, columns: Columns, x: Optional[torch.Tensor], softmax: bool,
         target_logit: Optional[torch.Tensor]):
    spec = plan.logits
    n = inp.num_rows
    dtype, device = inp.dtype, inp.device
    tcol = torch.full((n,), -1, dtype=torch.long, device=device)
    tcol[inp.pos] = inp.target
    scale = spec.scale if isinstance(spec.scale, torch.Tensor) else None
    thresh = spec.thresh.detach().to(dtype) if spec.thresh is not None else None
    terms, flat = [], []
    for t in plan.row_terms.values():
        mask = None if t.col_mask is None else t.col_mask.detach().to(dtype)
        other = None if t.columns is None else t.columns.detach().to(dtype)
        terms.append((t.fn, mask, other, len(t.args)))
        flat.extend(t.args)
    if columns.cosine is not None and all(t[2] is None for t in terms):
        x = None
    elif x is None:
        raise ValueError("a row term over another matrix needs the embeddings: pass embeddings=...")
    call = _Call(columns, tcol, thresh, 0.0 if scale is not None else float(spec.scale),
                 (float(spec.hard_a), float(spec.hard_q), float(spec.hard_b)), terms, inp.ctx, softmax)
    if target_logit is None:
        target_logit = torch.zeros(n, dtype=dtype, device=device)
    return _HeadBlocks.apply(call, columns.cosine, x, columns.weight, scale, target_logit, *flat)


def plan_terms(plan: HeadPlan, sums: Sequence[torch.Tensor], inp: HeadInputs) -> Dict[str, torch.Tensor]:
    """The plan's terms: ready terms, plus each row term as ``weight * (global sum of its rows) / N``
    (added to the ready term of the same name, if any)."""
    terms = dict(plan.terms)
    n = max(1, inp.num_rows)
    for (name, t), rows in zip(plan.row_terms.items(), sums):
        value = t.weight * global_sum(rows.sum(), inp.ctx) / n
        terms[name] = terms[name] + value if name in terms else value
    return terms


def row_sums(plan: HeadPlan, inp: HeadInputs, columns: Columns, x: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
    """This shard's [N] row sums of each row term of ``plan`` (no softmax)."""
    if not plan.row_terms:
        return []
    return list(_run(plan, inp, columns, x, False, None)[1:])


def head_loss(head: Planner, inp: HeadInputs, columns: Columns, x: Optional[torch.Tensor] = None,
              check_finite: bool = True) -> Tuple[torch.Tensor, LossParts]:
    """``mean_i (lse_i - out_iy) + sum(terms)`` of one head call: the loss of every layer.

    Args:
        head: a head (:class:`~.contract.Planner`).
        inp: its validated :class:`~.contract.HeadInputs`.
        columns: where the cosines come from.
        x: [N, D] normalised embeddings, for row terms over another matrix and the products.
        check_finite: with the head's ``check_inputs``, a NaN/Inf logsumexp raises; ``False`` leaves
            the loss NaN on every rank (the logsumexp is global), so a GradScaler skips the step.

    Returns:
        ``(loss, parts)``: the scalar loss (global value, this rank's gradient) and its detached
        parts by name (``ce``, the head's terms and statistics).
    """
    plan = head.plan(inp)
    spec = plan.logits
    n = inp.num_rows
    target_logit = torch.zeros(n, dtype=inp.dtype, device=inp.device)
    target_logit = target_logit.index_put((inp.pos,), spec.target_logits(inp.target_cosine).to(inp.dtype))
    lse, *sums = _run(plan, inp, columns, x, True, target_logit)
    if head.check_inputs and check_finite:
        _require_finite_lse(lse, columns, inp.ctx)
    ce = (lse.sum() - global_sum(target_logit[inp.pos].sum(), inp.ctx)) / max(1, n)
    terms = plan_terms(plan, sums, inp)
    loss = ce
    for v in terms.values():
        loss = loss + v
    parts = {**{k: v.detach() for k, v in terms.items()}, **{k: v.detach() for k, v in plan.stats.items()},
             "ce": ce.detach()}
    return loss, parts


def _require_finite_lse(lse: torch.Tensor, columns: Columns, ctx: DistContext) -> None:
    """NaN/+Inf in the (global) logsumexp, the embeddings, norms and target cosines checked before:
    every rank raises the same error, naming the shard and column of a non-finite class proxy."""
    bad = torch.isnan(lse) | (lse == float("inf"))
    if not bool(bad.any()):
        return
    problem = None
    if columns.weight is not None:
        with torch.no_grad():
            w = columns.weight if columns.index is None else columns.weight[columns.index]
            found = torch.nonzero((~torch.isfinite(w)).any(1)).reshape(-1)
        if found.numel():
            problem = (5, int(found[0]))
    raise_nonfinite(problem, ctx, otherwise=f"non-finite logits at row {int(torch.nonzero(bad)[0])} (NaN/Inf in "
                    "the class proxies). Disable this check with check_inputs=False.")
