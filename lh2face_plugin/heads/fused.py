"""One memory-lean operator for every margin head.

All heads in this package produce logits of the form

    out_ij = k_i * c_ij + [c_ij > t_i] * (a * c_ij + b)      for j != y_i
    out_iy = psi(c_iy, *psi_args)                              for the target

with a per-row (or scalar) scale ``k``, an optional per-row threshold ``t``
that marks "hard" negatives (MV-/SV-Softmax, ArcFace's inter-class
filtering), scalars ``a``/``b`` and any differentiable target function
``psi`` evaluated on the N target cosines.

:func:`margin_logits` computes this with one new [N, C] tensor in the forward
pass and one (the gradient of the cosines) in the backward pass, working
over row blocks so masks and products never exist at full size. Its backward
re-evaluates ``psi`` on the target cosines with autograd, so a head only
writes its scalar equations.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch

__all__ = ["margin_logits"]

BLOCK_ELEMENTS = 1 << 22


def _blocks(n_rows: int, n_cols: int):
    step = max(1, BLOCK_ELEMENTS // max(1, n_cols))
    for r0 in range(0, n_rows, step):
        yield r0, min(n_rows, r0 + step)


def _row(x, r0, r1):
    if isinstance(x, torch.Tensor):
        return x[r0:r1, None]
    return x


class _MarginLogits(torch.autograd.Function):
    @staticmethod
    def forward(fctx, cosine, scale, thresh, hard_a, hard_b, pos, target, psi, n_args, *psi_args):
        out = torch.empty_like(cosine)
        n, c = cosine.shape
        if thresh is None:
            torch.mul(cosine, _row(scale, 0, n), out=out)
        else:
            for r0, r1 in _blocks(n, c):
                blk, o = cosine[r0:r1], out[r0:r1]
                torch.mul(blk, _row(scale, r0, r1), out=o)
                hard = blk > thresh[r0:r1, None]
                o.add_(torch.where(hard, blk * hard_a + hard_b, 0.0))
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
        fctx.hard_a, fctx.psi, fctx.n_args = hard_a, psi, n_args
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
        need_args = fctx.needs_input_grad[9:]

        grad_cos = grad_scale = None
        if need_cos:
            grad_cos = torch.empty_like(cosine)
            if thresh is None:
                torch.mul(grad_out, _row(scale, 0, n), out=grad_cos)
            else:
                for r0, r1 in _blocks(n, c):
                    g, o = grad_out[r0:r1], grad_cos[r0:r1]
                    torch.mul(g, _row(scale, r0, r1), out=o)
                    if fctx.hard_a != 0:
                        hard = cosine[r0:r1] > thresh[r0:r1, None]
                        o.add_(torch.where(hard, g * fctx.hard_a, 0.0))
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
        return (grad_cos, grad_scale, None, None, None, None, None, None, None, *grad_args)


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
            ``c > t_i`` get ``a*c + b`` added. Not differentiated.
        hard_a, hard_b: the affine bonus of hard negatives.

    Returns:
        [N, C] logits, a new tensor of ``cosine``'s dtype.
    """
    if thresh is not None:
        thresh = thresh.detach().to(cosine.dtype)
    return _MarginLogits.apply(
        cosine, scale, thresh, float(hard_a), float(hard_b), pos, target, psi, len(psi_args), *psi_args
    )
