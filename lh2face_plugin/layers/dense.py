"""The dense layer: a head evaluated on a given [N, C] cosine matrix.

Two outputs:

- :func:`dense_head_loss`: the loss (cross-entropy + terms) through the head engine
  (:func:`.engine.head_loss`), without writing the [N, C] logits; the classifier and the
  plugin's Partial FC use it;
- :func:`margin_logits` / :func:`evaluate_plan`: the [N, C] logits themselves (one new
  tensor, built over row blocks with :mod:`.formula`), for :func:`evaluate_head` (``Head.evaluate``)
  and :func:`margin_loss_logits` (``Head.forward``), the adapter to arcface_torch's own ``PartialFC_V2``,
  which takes ``margin_loss(logits, labels) -> logits``.
"""
from __future__ import annotations

import itertools
from typing import Callable, Optional, Sequence, Union

import torch

from .contract import HeadInputs, HeadPlan, HeadResult, Layer, Planner, as_cosine
from .engine import Columns, head_loss, plan_terms, row_sums
from .formula import negative_logits, rows_of, times_slope_
from .precision import check_nonfinite, no_autocast

__all__ = ["margin_logits", "evaluate_plan", "margin_loss_logits", "evaluate_head", "dense_head_loss",
           "ROW_BLOCK_ELEMENTS"]

ROW_BLOCK_ELEMENTS = 1 << 22


def _row_blocks(n_rows: int, n_cols: int):
    step = max(1, ROW_BLOCK_ELEMENTS // max(1, n_cols))
    for r0 in range(0, n_rows, step):
        yield r0, min(n_rows, r0 + step)


class _MarginLogits(torch.autograd.Function):
    @staticmethod
    def forward(fctx, cosine, scale, thresh, hard, pos, target, psi, *psi_args):
        out = torch.empty_like(cosine)
        a, q, b = hard
        for r in itertools.starmap(slice, _row_blocks(*cosine.shape)):
            out[r] = negative_logits(cosine[r], rows_of(scale, r), rows_of(thresh, r), a, q, b)
        if pos.numel():
            out[pos, target] = psi(cosine[pos, target], *psi_args).to(out.dtype)
        fctx.save_for_backward(cosine, pos, target, scale if isinstance(scale, torch.Tensor) else None, thresh,
                               *psi_args)
        fctx.scale, fctx.hard, fctx.psi = scale, hard, psi
        return out

    @staticmethod
    def backward(fctx, grad_out):
        cosine, pos, target, scale_t, thresh, *psi_args = fctx.saved_tensors
        scale = scale_t if scale_t is not None else fctx.scale
        a, q, _ = fctx.hard
        need_cos, need_scale = fctx.needs_input_grad[0], fctx.needs_input_grad[1]
        need_args = fctx.needs_input_grad[7:]
        grad_cos = grad_scale = None
        if need_cos:
            grad_cos = torch.empty_like(cosine)
            for r in itertools.starmap(slice, _row_blocks(*cosine.shape)):
                grad_cos[r] = times_slope_(grad_out[r].clone(), cosine[r], rows_of(scale, r), rows_of(thresh, r), a, q)
        if need_scale:
            grad_scale = torch.einsum("ij,ij->i", grad_out, cosine)
            if pos.numel():
                grad_scale[pos] -= grad_out[pos, target] * cosine[pos, target]
        grad_args = [None] * len(psi_args)
        if pos.numel() and (need_cos or any(need_args)):
            with torch.enable_grad():
                ct = cosine[pos, target].detach().requires_grad_(need_cos)
                args = [t.detach().requires_grad_(bool(nd)) for t, nd in zip(psi_args, need_args)]
                value = fctx.psi(ct, *args)
                inputs = ([ct] if need_cos else []) + [t for t, nd in zip(args, need_args) if nd]
                grads = list(torch.autograd.grad(value, inputs, grad_out[pos, target].to(value.dtype),
                                                 allow_unused=True))
            if need_cos:
                g_t = grads.pop(0)
                grad_cos[pos, target] = 0.0 if g_t is None else g_t.to(grad_cos.dtype)
            for i, nd in enumerate(need_args):
                if nd:
                    grad_args[i] = grads.pop(0)
        elif need_cos and pos.numel():
            grad_cos[pos, target] = 0.0
        return (grad_cos, grad_scale, None, None, None, None, None, *grad_args)


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
    """The [N, C] logits of a :class:`~lh2face_plugin.layers.contract.LogitSpec`, one new tensor.

    Args:
        cosine: [N, C] float cosines (not modified).
        pos: [P] int64 rows that have their target on this shard.
        target: [P] int64 target column of each row in ``pos``.
        psi: target function ``psi(c_t, *psi_args) -> [P]``; differentiable.
        psi_args: [P]-shaped (or broadcastable) tensors ``psi`` depends on.
        scale: scalar or [N] tensor ``k`` (differentiable when a tensor).
        thresh: optional [N] tensor ``t`` (not differentiated).
        hard_a, hard_b, hard_q: the bonus ``a*c + q*c^2 + b`` of hard negatives.

    Returns:
        [N, C] logits of ``cosine``'s dtype.
    """
    if thresh is not None:
        thresh = thresh.detach().to(cosine.dtype)
    return _MarginLogits.apply(cosine, scale, thresh, (float(hard_a), float(hard_q), float(hard_b)), pos, target,
                               psi, *psi_args)


def evaluate_plan(plan: HeadPlan, inp: HeadInputs, cosine: torch.Tensor,
                  embeddings: Optional[torch.Tensor] = None) -> HeadResult:
    """A :class:`~.contract.HeadResult`: the dense logits of ``plan`` on ``cosine``
    and its terms (row terms summed over rows and shards, weighted, divided by N)."""
    spec = plan.logits
    logits = margin_logits(cosine, inp.pos, inp.target, spec.psi, spec.psi_args, scale=spec.scale,
                           thresh=spec.thresh, hard_a=spec.hard_a, hard_b=spec.hard_b, hard_q=spec.hard_q)
    sums = row_sums(plan, inp, Columns(cosine=cosine, index=inp.class_index), embeddings)
    return HeadResult(logits, plan_terms(plan, sums, inp), dict(plan.stats))


def margin_loss_logits(head: Planner, cosine: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """arcface_torch's ``margin_loss(logits, labels) -> logits`` for ``head`` (``Head.forward``): [N, C]
    cosines of this shard (labels -1 off-shard) to [N, C] float32 logits.

    Raises:
        TypeError: the head needs norms, embeddings or class proxies, or adds loss terms,
            which arcface_torch's ``PartialFC_V2`` cannot pass or add.
    """
    needs = [n for n, f in (("norms", head.needs_norms), ("embeddings", head.needs_embeddings),
                            ("class proxies", head.needs_weights)) if f]
    if needs:
        raise TypeError(_host_message(head, f"needs {' and '.join(needs)}"))
    head.require_layer(Layer.DENSE)
    with torch.autocast(device_type=cosine.device.type, enabled=False):
        cosine = as_cosine(cosine)
        inp = head.inputs(labels, cosine.shape[1], cosine=cosine)
        plan = head.plan(inp)
    if plan.terms or plan.row_terms:
        raise TypeError(_host_message(head, f"adds loss terms ({', '.join([*plan.terms, *plan.row_terms])})"))
    return evaluate_plan(plan, inp, cosine).logits


def _host_message(head: Planner, why: str) -> str:
    return (f"{type(head).__name__} {why}: arcface_torch's PartialFC_V2 passes its margin_loss only the "
            "cosines; use lh2face_plugin's Partial FC (lh2face_plugin.arcface_torch.partial_fc_class(host), "
            "or config.loss in a recipe) instead")


def evaluate_head(head: Planner, cosine: torch.Tensor, labels: torch.Tensor, *, norms: Optional[torch.Tensor] = None,
                  embeddings: Optional[torch.Tensor] = None, weights: Optional[torch.Tensor] = None,
                  class_index: Optional[torch.Tensor] = None, ctx=None) -> HeadResult:
    """Dense logits and terms of ``head`` on ``cosine`` [N, C] (``Head.evaluate``; tests, references)."""
    head.require_layer(Layer.DENSE)
    with torch.autocast(device_type=cosine.device.type, enabled=False):
        cosine = as_cosine(cosine)
        inp = head.inputs(labels, cosine.shape[1], norms=norms, embeddings=embeddings, weights=weights,
                          class_index=class_index, ctx=ctx, cosine=cosine)
        return evaluate_plan(head.plan(inp), inp, cosine, inp.embeddings)


def dense_head_loss(head: Planner, cosine: torch.Tensor, labels: torch.Tensor, *, norms=None, embeddings=None,
                    weights=None, class_index=None, ctx=None, nonfinite: str = "raise"):
    """The head's loss on a dense [N, C] cosine matrix: ``(loss, parts)`` (see :func:`.engine.head_loss`).

    Args as :meth:`~lh2face_plugin.heads.base.Head.evaluate`; half inputs are computed in float32
    with autocast off. ``nonfinite`` as in :func:`.blockwise.blockwise_head_loss`.
    """
    head.require_layer(Layer.DENSE)
    check_finite = check_nonfinite(nonfinite)
    with no_autocast(cosine.device):
        cosine = as_cosine(cosine)
        inp = head.inputs(labels, cosine.shape[1], norms=norms, embeddings=embeddings, weights=weights,
                          class_index=class_index, ctx=ctx, cosine=cosine, check_finite=check_finite)
        return head_loss(head, inp, Columns(cosine=cosine, index=class_index), inp.embeddings, check_finite)
