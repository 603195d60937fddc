"""The logit formula of the head contract, evaluated in one place.

Every head describes its non-target logits as (:class:`~lh2face_plugin.heads.base.LogitSpec`)::

    out_ij = k_i c_ij + [c_ij > t_i] (a c_ij + q c_ij^2 + b)          j != y_i

with a per-row (or scalar) scale ``k``, an optional per-row threshold ``t`` marking hard
negatives and scalars ``a``, ``q``, ``b``. :func:`negative_logits` evaluates it on a block
of cosines and :func:`times_slope_` multiplies a block by its derivative
``d out / d c = k + [c > t] (a + 2 q c)``; the dense layer (row blocks) and the
column-block engine (dense cosines or products) call only these two.
"""
from __future__ import annotations

from typing import Optional, Union

import torch

__all__ = ["negative_logits", "times_slope_", "has_hard_bonus"]

Scale = Union[float, torch.Tensor]


def has_hard_bonus(thresh: Optional[torch.Tensor], a: float, q: float, b: float) -> bool:
    return thresh is not None and bool(a or q or b)


def negative_logits(cos: torch.Tensor, scale: Scale, thresh: Optional[torch.Tensor], a: float, q: float,
                    b: float) -> torch.Tensor:
    """``k c + [c > t] (a c + q c^2 + b)``, a new tensor.

    Args:
        cos: [R, c] cosines.
        scale: a float or an [R, 1] tensor ``k``.
        thresh: ``None`` or an [R, 1] tensor ``t``.
        a, q, b: the hard-negative bonus.
    """
    out = cos * scale
    if has_hard_bonus(thresh, a, q, b):
        hard = (cos > thresh).to(cos.dtype)
        if q:
            bonus = torch.addcmul(torch.full_like(cos, b), cos, cos, value=q)
            if a:
                bonus.add_(cos, alpha=a)
        else:
            bonus = cos * a
            if b:
                bonus.add_(b)
        out.addcmul_(bonus, hard)
    return out


def times_slope_(grad: torch.Tensor, cos: torch.Tensor, scale: Scale, thresh: Optional[torch.Tensor], a: float,
                 q: float) -> torch.Tensor:
    """``grad *= k + [c > t] (a + 2 q c)`` in place (the chain rule through :func:`negative_logits`)."""
    if thresh is None or not (a or q):
        return grad.mul_(scale)
    slope = (cos > thresh).to(cos.dtype)
    slope.mul_(torch.add(cos, a / (2.0 * q)).mul_(2.0 * q) if q else a)
    slope.add_(scale)
    return grad.mul_(slope)
