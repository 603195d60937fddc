"""Dense evaluation of a head's description: one new [N, C] tensor per pass.

All heads in this package produce logits of the form

    out_ij = k_i * c_ij + [c_ij > t_i] * (a * c_ij + q * c_ij^2 + b)      for j != y_i
    out_iy = psi(c_iy, *psi_args)                                           for the target

with a per-row (or scalar) scale ``k``, an optional per-row threshold ``t``
that marks "hard" negatives (MV-/SV-Softmax, CurricularFace, ArcFace's
inter-class filtering), scalars ``a``/``q``/``b`` and any differentiable
target function ``psi`` evaluated on the N target cosines
(:class:`~lh2face_plugin.heads.base.LogitSpec`).

:func:`margin_logits` computes this with one new [N, C] tensor in the forward
pass and one (the gradient of the cosines) in the backward pass, working
over row blocks so masks and products never exist at full size. Its backward
re-evaluates ``psi`` on the target cosines with autograd, so a head only
writes its scalar equations. :func:`masked_rowsum` evaluates the row terms the
same way, and :func:`evaluate_plan` turns a :class:`~.base.HeadPlan` into a
:class:`~.base.HeadResult`. The memory-lean layer that never builds the
[N, C] logits is :mod:`lh2face_plugin.heads.blockwise`.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch

__all__ = ["margin_logits", "masked_rowsum", "evaluate_plan"]

BLOCK_ELEMENTS = 1 << 22


def _blocks(n_rows: int, n_cols: int):
    step = max(1, BLOCK_ELEMENTS // max(1, n_cols))
    for r0 in range(0, n_rows, step):
        yield r0, min(n_rows, r0 + step)


def _hard_mask(block, thresh, buf):
    """``[block > thresh]`` as 0/1 in the block's dtype, written into a reused buffer."""
    if buf is None or buf.numel() < block.numel():
        buf = torch.empty(block.numel(), dtype=block.dtype, device=block.device)
    mask = buf[: block.numel()].view(block.shape)
    torch.gt(block, thresh, out=mask)
    return mask, buf


def _row(x, r0, r1):
    if isinstance(x, torch.Tensor):
        return x[r0:r1, None]
    return x


class _MarginLogits(torch.autograd.Function):
    @staticmethod
    def forward(fctx, cosine, scale, thresh, hard_a, hard_q, hard_b, pos, target, psi, n_args, *psi_args):
        out = torch.empty_like(cosine)
        n, c = cosine.shape
        if thresh is None:
            torch.mul(cosine, _row(scale, 0, n), out=out)
        else:
            buf = None
            for r0, r1 in _blocks(n, c):
                blk, o = cosine[r0:r1], out[r0:r1]
                torch.mul(blk, _row(scale, r0, r1), out=o)
                hard, buf = _hard_mask(blk, thresh[r0:r1, None], buf)
                if hard_a != 0:
                    o.addcmul_(blk, hard, value=hard_a)
                if hard_q != 0:
                    o.addcmul_(blk * blk, hard, value=hard_q)
                if hard_b != 0:
                    o.add_(hard, alpha=hard_b)
        if pos.numel():
            out[pos, target] = psi(cosine[pos, target], *psi_args).to(out.dtype)
        saved = [cosine, pos, target]
        fctx.scale_is_tensor = isinstance(scale, torch.Tensor)
        fctx.has_thresh = thresh is not None
        if fctx.scale_is_tensor:
            saved.append(scale)
        else:
            fctx.scale = scale
        if thresh is not None:
            saved.append(thresh)
        saved.extend(psi_args)
        fctx.save_for_backward(*saved)
        fctx.hard_a, fctx.hard_q, fctx.psi, fctx.n_args = hard_a, hard_q, psi, n_args
        return out

    @staticmethod
    def backward(fctx, grad_out):
        saved = list(fctx.saved_tensors)
        cosine, pos, target = saved[:3]
        rest = saved[3:]
        scale = rest.pop(0) if fctx.scale_is_tensor else fctx.scale
        thresh = rest.pop(0) if fctx.has_thresh else None
        psi_args = rest
        n, c = cosine.shape
        need_cos, need_scale = fctx.needs_input_grad[0], fctx.needs_input_grad[1]
        need_args = fctx.needs_input_grad[10:]

        grad_cos = grad_scale = None
        if need_cos:
            grad_cos = torch.empty_like(cosine)
            if thresh is None:
                torch.mul(grad_out, _row(scale, 0, n), out=grad_cos)
            else:
                buf = None
                for r0, r1 in _blocks(n, c):
                    g, o = grad_out[r0:r1], grad_cos[r0:r1]
                    torch.mul(g, _row(scale, r0, r1), out=o)
                    if fctx.hard_a != 0 or fctx.hard_q != 0:
                        blk = cosine[r0:r1]
                        hard, buf = _hard_mask(blk, thresh[r0:r1, None], buf)
                        if fctx.hard_a != 0:
                            o.addcmul_(g, hard, value=fctx.hard_a)
                        if fctx.hard_q != 0:
                            o.addcmul_(g * blk, hard, value=2.0 * fctx.hard_q)
        if need_scale:
            grad_scale = torch.empty(n, dtype=cosine.dtype, device=cosine.device)
            for r0, r1 in _blocks(n, c):
                grad_scale[r0:r1] = torch.einsum("ij,ij->i", grad_out[r0:r1], cosine[r0:r1])
            if pos.numel():
                grad_scale[pos] -= grad_out[pos, target] * cosine[pos, target]

        grad_args = [None] * len(psi_args)
        if pos.numel() and (need_cos or any(need_args)):
            with torch.enable_grad():
                ct = cosine[pos, target].detach().requires_grad_(need_cos)
                args = [a.detach().requires_grad_(bool(need)) for a, need in zip(psi_args, need_args)]
                value = fctx.psi(ct, *args)
                inputs = ([ct] if need_cos else []) + [a for a, need in zip(args, need_args) if need]
                grads = torch.autograd.grad(value, inputs, grad_out[pos, target].to(value.dtype), allow_unused=True)
            grads = list(grads)
            if need_cos:
                g_t = grads.pop(0)
                grad_cos[pos, target] = 0.0 if g_t is None else g_t.to(grad_cos.dtype)
            for i, need in enumerate(need_args):
                if need:
                    grad_args[i] = grads.pop(0)
        elif need_cos and pos.numel():
            grad_cos[pos, target] = 0.0
        return (grad_cos, grad_scale, None, None, None, None, None, None, None, None, *grad_args)


def margin_logits(
    cosine: torch.Tensor,
    pos: torch.Tensor,
    target: torch.Tensor,
    psi: Callable[..., torch.Tensor],
    psi_args: Sequence[torch.Tensor] = (),
    scale: Union[float, torch.Tensor] = 1.0,
    thresh: Optional[torch.Tensor] = None,
    hard_a: float = 0.0,
    hard_b: float = 0.0,
    hard_q: float = 0.0,
) -> torch.Tensor:
    """Margin logits without full-size temporaries.

    Args:
        cosine: [N, C] float cosines (not modified).
        pos: [P] int64 rows that have their target on this shard.
        target: [P] int64 target column of each row in ``pos``.
        psi: target function ``psi(c_t, *psi_args) -> [P]``; differentiable.
        psi_args: [P]-shaped (or broadcastable) tensors ``psi`` depends on.
        scale: scalar or [N] tensor ``k`` (differentiable when a tensor).
        thresh: optional [N] tensor ``t``; non-target entries with
            ``c > t_i`` get ``a*c + q*c^2 + b`` added. Not differentiated.
        hard_a, hard_b, hard_q: the bonus ``a*c + q*c^2 + b`` of hard negatives.

    Returns:
        [N, C] logits, a new tensor of ``cosine``'s dtype.
    """
    if thresh is not None:
        thresh = thresh.detach().to(cosine.dtype)
    return _MarginLogits.apply(
        cosine, scale, thresh, float(hard_a), float(hard_q), float(hard_b), pos, target, psi, len(psi_args),
        *psi_args
    )


class _MaskedRowSum(torch.autograd.Function):
    @staticmethod
    def forward(fctx, x, pos, target, col_mask, fn, *args):
        n, c = x.shape
        out = x.new_zeros(n)
        for r0, r1 in _blocks(n, c):
            out[r0:r1] = _masked_block(x, r0, r1, pos, target, col_mask, fn, args).sum(dim=1)
        fctx.save_for_backward(x, pos, target, *(() if col_mask is None else (col_mask,)), *args)
        fctx.fn, fctx.has_mask, fctx.n_args = fn, col_mask is not None, len(args)
        return out

    @staticmethod
    def backward(fctx, grad_rows):
        saved = list(fctx.saved_tensors)
        x, pos, target = saved[:3]
        col_mask = saved[3] if fctx.has_mask else None
        args = saved[3 + int(fctx.has_mask):]
        need_x = fctx.needs_input_grad[0]
        need_args = fctx.needs_input_grad[5:]
        n, c = x.shape
        grad_x = torch.empty_like(x) if need_x else None
        grad_args = [torch.zeros_like(a) if need else None for a, need in zip(args, need_args)]
        for r0, r1 in _blocks(n, c):
            with torch.enable_grad():
                xb = x[r0:r1].detach().requires_grad_(need_x)
                ab = [a.detach().requires_grad_(bool(need)) for a, need in zip(args, need_args)]
                y = _masked_block(xb, 0, r1 - r0, pos - r0, target, col_mask, fctx.fn, ab,
                                  row_offset_done=True)
                inputs = ([xb] if need_x else []) + [a for a, need in zip(ab, need_args) if need]
                if not inputs:
                    break
                grads = list(torch.autograd.grad(y, inputs, grad_rows[r0:r1, None].expand_as(y), allow_unused=True))
            if need_x:
                g = grads.pop(0)
                grad_x[r0:r1] = 0.0 if g is None else g
            for i, need in enumerate(need_args):
                if need:
                    g = grads.pop(0)
                    if g is not None:
                        grad_args[i] += g
        return (grad_x, None, None, None, None, *grad_args)


def _masked_block(x, r0, r1, pos, target, col_mask, fn, args, row_offset_done=False):
    xb = x if row_offset_done else x[r0:r1]
    y = fn(xb, *args)
    if col_mask is not None:
        y = y * col_mask[None, :].to(y.dtype)
    sel = (pos >= 0) & (pos < xb.shape[0]) if row_offset_done else (pos >= r0) & (pos < r1)
    rows = pos[sel] - (0 if row_offset_done else r0)
    if rows.numel():
        y = y.index_put((rows, target[sel]), y.new_zeros(rows.numel()))
    return y


def masked_rowsum(
    x: torch.Tensor,
    fn: Callable[..., torch.Tensor],
    args: Sequence[torch.Tensor] = (),
    pos: Optional[torch.Tensor] = None,
    target: Optional[torch.Tensor] = None,
    col_mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Row sums ``sum_j fn(x_ij, *args)`` over non-target, unmasked columns.

    Works over row blocks in both passes (the backward recomputes ``fn`` with
    autograd), so only the gradient of ``x`` is allocated at full size.

    Args:
        x: [N, C] float tensor.
        fn: elementwise differentiable function of a block and ``args``.
        args: scalar (0-d) tensors ``fn`` depends on (differentiable).
        pos, target: rows with a target column on this shard and that column;
            those entries are excluded.
        col_mask: optional [C] bool; False columns are excluded.

    Returns:
        [N] row sums.
    """
    if pos is None:
        pos = torch.zeros(0, dtype=torch.long, device=x.device)
        target = pos
    if col_mask is not None:
        col_mask = col_mask.detach()
    return _MaskedRowSum.apply(x, pos, target, col_mask, fn, *args)


def evaluate_plan(plan, inp):
    """Dense evaluation of a :class:`~.base.HeadPlan` on ``inp.cosine``.

    Returns:
        :class:`~.base.HeadResult` with the logits, the ready terms and each row
        term summed over rows and shards, weighted and divided by N.
    """
    from ..distributed import global_sum
    from .base import HeadResult

    spec = plan.logits
    logits = margin_logits(inp.cosine, inp.pos, inp.target, spec.psi, spec.psi_args, scale=spec.scale,
                           thresh=spec.thresh, hard_a=spec.hard_a, hard_b=spec.hard_b, hard_q=spec.hard_q)
    terms = dict(plan.terms)
    n = max(1, inp.num_rows)
    for name, term in plan.row_terms.items():
        rows = masked_rowsum(inp.cosine, term.fn, (), inp.pos, inp.target, term.col_mask)
        terms[name] = term.weight * global_sum(rows.sum(), inp.ctx) / n
    return HeadResult(logits, terms, dict(plan.stats))
