"""The logit formula of the head contract, evaluated in one place.

Every head describes its non-target logits as (:class:`~.contract.LogitSpec`)::

    out_ij = k_i c_ij + [c_ij > t_i] (a c_ij + q c_ij^2 + b)          j != y_i

with a per-row (or scalar) scale ``k``, an optional per-row threshold ``t`` marking hard
negatives and scalars ``a``, ``q``, ``b``. :func:`negative_logits` evaluates it on a block
of cosines and :func:`times_slope_` multiplies a block by its derivative
``d out / d c = k + [c > t] (a + 2 q c)``; the dense layer (row blocks) and the
column-block engine (dense cosines or products) call only these.
"""
from __future__ import annotations

from typing import Optional, Union

import torch

__all__ = ["negative_logits", "times_slope_", "hard_mask", "rows_of"]

Scale = Union[float, torch.Tensor]


def rows_of(t: Optional[Scale], rows: slice) -> Optional[Scale]:
    """A per-row argument (``k`` or ``t``) for a block of rows: [R, 1] for an [N] tensor; floats and
    ``None`` as they are."""
    return t[rows, None] if isinstance(t, torch.Tensor) else t


def hard_mask(cos: torch.Tensor, thresh: Optional[torch.Tensor], a: float, q: float, b: float
              ) -> Optional[torch.Tensor]:
    """``[c > t]`` as a bool block, or ``None`` where the hard bonus is zero or there is no threshold."""
    if thresh is None or not (a or q or b):
        return None
    return cos > thresh


def negative_logits(cos: torch.Tensor, scale: Scale, thresh: Optional[torch.Tensor], a: float, q: float,
                    b: float, hard: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``k c + [c > t] (a c + q c^2 + b)``, a new tensor.

    Args:
        cos: [R, c] cosines.
        scale: a float or an [R, 1] tensor ``k``.
        thresh: ``None`` or an [R, 1] tensor ``t``.
        a, q, b: the hard-negative bonus.
        hard: :func:`hard_mask` of the block, when already known.
    """
    out = cos * scale
    if hard is None:
        hard = hard_mask(cos, thresh, a, q, b)
    if hard is None:
        return out
    if b and not isinstance(scale, torch.Tensor):
        with_bonus = torch.add(cos.new_tensor(b), cos, alpha=scale + a)
    else:
        with_bonus = cos * (scale + a)
        if b:
            with_bonus.add_(b)
    if q:
        with_bonus.addcmul_(cos, cos, value=q)
    return torch.where(hard, with_bonus, out, out=out)


def times_slope_(grad: torch.Tensor, cos: torch.Tensor, scale: Scale, thresh: Optional[torch.Tensor], a: float,
                 q: float, hard: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``grad *= k + [c > t] (a + 2 q c)`` in place (the chain rule through :func:`negative_logits`)."""
    if thresh is None or not (a or q):
        return grad.mul_(scale)
    if hard is None:
        hard = cos > thresh
    if q:
        slope = torch.mul(cos, 2.0 * q).add_(scale + a)
        return grad.mul_(torch.where(hard, slope, scale if isinstance(scale, torch.Tensor) else
                                     torch.tensor(scale, dtype=cos.dtype, device=cos.device), out=slope))
    k = scale if isinstance(scale, torch.Tensor) else torch.tensor(scale, dtype=cos.dtype, device=cos.device)
    return grad.mul_(torch.where(hard, k + a, k))
