"""The blockwise layer: a head's loss without the [N, C] cosines or logits.

The cosines ``clamp(<x_i, w_j / |w_j|>, -1, 1)`` are formed one column block at a time from
the normalised embeddings and the raw class proxies, and evaluated by the head engine
(:func:`.engine.head_loss`, the same code as the dense layer); the backward pass recomputes
each block. Peak memory: the gradient of the proxies plus a few [N, block] blocks.

The proxies' gradient is one dense [C, D] buffer: the engine leaves it in a holder and the
row gathers that read proxies elsewhere in the call (the target proxies, LH2Face's L_pp)
return sparse row gradients, which :class:`_GradientCollector` adds into that buffer in place.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..distributed import DistContext
from .contract import Layer, Planner
from .engine import Columns, head_loss
from .precision import check_nonfinite, no_autocast, product_dtype
from .products import normalize_rows

__all__ = ["blockwise_head_loss"]


class _GradientCollector(torch.autograd.Function):
    """Identity on the proxies whose backward returns one dense [C, D] gradient (see the module
    docstring): a plain gather would add a second [C, D] buffer to the peak."""

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


@torch.compiler.disable
def blockwise_head_loss(head: Planner, x: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, *,
                        norms: Optional[torch.Tensor] = None, index: Optional[torch.Tensor] = None,
                        ctx: Optional[DistContext] = None, block_elements: Optional[int] = None,
                        matmul_dtype: Optional[torch.dtype] = None, cache_cosine: bool = False,
                        nonfinite: str = "raise"):
    """A head's loss, ``mean_i (lse_i - out_iy) + sum(terms)``, column block by column block.

    Equals the dense layer (:func:`.dense.dense_head_loss` on the clamped cosines) to rounding.

    Under ``torch.compile`` this function runs eagerly (a graph break, :func:`torch.compiler.disable`):
    its proxies' gradient is written through a holder and a sparse identity that no compiler backend
    traces faithfully (inductor and aot_eager fail on the sparse tensor, eager drops all but the target
    rows), so the rest of the step compiles and this layer's gradient stays exact.

    Precision (:mod:`.precision`): the products run in ``matmul_dtype``; when it is ``None``, in
    ``x``'s dtype if that is float16/bfloat16, else in the caller's autocast dtype if autocast is on,
    else in float32. Everything else runs in float32 with autocast off, so the forward and the
    backward's recomputation see the same values.

    Args:
        head: a head (:class:`~.contract.Planner`), e.g. a :class:`~lh2face_plugin.heads.base.Head`.
        x: [N, D] normalised embeddings (the gathered batch), differentiable; float32, float64,
            float16 or bfloat16.
        weight: [C_all, D] raw class proxies of this shard (differentiable), float32 or float64.
        labels: [N] int64 column on this shard (into ``index`` when sampling) or -1.
        norms: [N] raw feature norms, for heads that need them.
        index: optional [C] int64 sampled rows of ``weight`` (Partial FC's ``weight_index``).
        ctx: the class shards.
        block_elements: entries per block.
        matmul_dtype: compute the products in this dtype (fp16/bf16 training), the rest in float32.
        cache_cosine: keep the [N, C] cosines (float32) for the backward instead of
            recomputing each block: one product less, one [N, C] tensor more.
        nonfinite: ``"raise"`` (with the head's ``check_inputs``: one ``FloatingPointError``, the
            same on every rank) or ``"nan"`` (the loss is NaN on every rank; a GradScaler skips the step).

    Returns:
        ``(loss, parts)``: the scalar loss (global value, local gradient) and its
        detached parts by name (``ce``, the head's terms and statistics).
    """
    head.require_layer(Layer.BLOCKWISE)
    if not (isinstance(weight, torch.Tensor) and weight.dtype in (torch.float32, torch.float64)):
        raise TypeError(f"class proxies (weight) must be float32 or float64, got {getattr(weight, 'dtype', weight)}: "
                        "keep the FC weight in float32 and put only the products in half with matmul_dtype=")
    if not (isinstance(x, torch.Tensor) and x.is_floating_point()):
        raise TypeError(f"embeddings must be a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    matmul_dtype = product_dtype(x, matmul_dtype)
    with no_autocast(x.device):
        if x.dtype != weight.dtype:
            x = x.to(weight.dtype)
        if norms is not None and norms.dtype != weight.dtype:
            norms = norms.to(weight.dtype)
        return _blockwise(head, x, weight, labels, norms, index, ctx, block_elements, matmul_dtype, cache_cosine,
                          check_nonfinite(nonfinite))


def _blockwise(head, x, weight, labels, norms, index, ctx, block_elements, matmul_dtype, cache_cosine, check_finite):
    ctx = ctx if ctx is not None else DistContext.single()
    labels = labels.reshape(-1).long()
    holder = None
    if weight.requires_grad and torch.is_grad_enabled():
        holder = {}
        weight = _GradientCollector.apply(weight, holder)
    columns = Columns(weight=weight, index=index, matmul_dtype=matmul_dtype, cache=bool(cache_cosine),
                      block_elements=block_elements, holder=holder)
    if x.dim() != 2 or labels.numel() != x.shape[0]:
        raise ValueError(f"embeddings must be [N, D] with N = {labels.numel()} labels, got shape {tuple(x.shape)}")
    pos_rows = torch.nonzero(labels >= 0).reshape(-1)
    cols = labels[pos_rows]
    in_range = (cols < columns.num).all() if cols.numel() else True
    target_cosine = x.new_zeros(pos_rows.numel())
    if bool(in_range):
        wt, _ = normalize_rows(_rows(weight, cols if index is None else index[cols]))
        if matmul_dtype is not None:
            # rounded as the block products are: half inputs, float32 accumulation, a half result
            xt, wh = x[pos_rows].to(matmul_dtype).to(x.dtype), wt.to(matmul_dtype).to(x.dtype)
            target_cosine = (xt * wh).sum(dim=1).to(matmul_dtype).to(x.dtype)
        else:
            target_cosine = (x[pos_rows] * wt).sum(dim=1)
        target_cosine = target_cosine.clamp(-1.0, 1.0)
    weights = normalize_rows(weight if index is None else weight[index])[0] if head.needs_weights else None

    def proxy_fn(c: torch.Tensor) -> torch.Tensor:
        return normalize_rows(_rows(weight, c if index is None else index[c]))[0]

    inp = head.inputs(labels, columns.num, norms=norms, embeddings=x, weights=weights, class_index=index, ctx=ctx,
                      target_cosine=target_cosine, proxy_fn=proxy_fn, check_finite=check_finite)
    return head_loss(head, inp, columns, x, check_finite)

