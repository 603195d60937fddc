"""Shared machinery of MV-Softmax and SV-Softmax: re-weighted hard negatives.

Both losses add a weight ``h`` to the negatives that a margin boundary calls
mis-classified, ``I_ik = [cos_ik > f(m, theta_iy)]``; in logit space a hard
negative becomes ``s*cos + [I] * (a*cos + b)``. The boundary ``f`` of every
row is needed on every class shard, so the target cosines (known on the
owning shard only) are all-reduced once per call: an [N] vector.
"""
from __future__ import annotations

import math

import torch

from ..distributed import reduce_target
from ..layers.contract import HeadInputs, HeadPlan, LogitSpec
from .angular import cos_plus
from .base import Head
from .hparams import check_choice, check_range

__all__ = ["HardNegativeSoftmax", "margin_fn"]


def margin_fn(kind: str, c: torch.Tensor, m: float) -> torch.Tensor:
    """f(m, theta): ``c`` (none), ``c - m`` (am) or ``cos(acos(c) + m)`` (arc)."""
    if kind == "none":
        return c
    if kind == "am":
        return c - m
    return cos_plus(c, m)


class HardNegativeSoftmax(Head):
    """Base: target ``s*f(m, theta_y)``, hard negatives ``s*cos + I*(a*cos + b)``.

    Subclasses set ``kind`` ("none", "am", "arc"), ``m``, ``s``, ``hard_a``,
    ``hard_b`` and ``easy_margin`` (keep the plain target where the margin
    would make it non-positive, as MV-Softmax's reference code does; the
    hard-negative boundary always uses the margin).
    """

    kind: str = "am"
    easy_margin: bool = False

    def _init_common(self, s: float, m: float, kind: str) -> None:
        self.kind = check_choice("margin_type", kind, ("none", "am", "arc"))
        self.s = check_range("s", s, 0.0, low_open=True)
        self.m = check_range("m", m, 0.0, math.pi / 2 if kind == "arc" else 1.0)

    def _target(self, c: torch.Tensor) -> torch.Tensor:
        f = margin_fn(self.kind, c, self.m)
        if self.easy_margin and self.kind != "none":
            keep = (c > self.m) if self.kind == "am" else (c > 0)
            f = torch.where(keep, f, c)
        return self.s * f

    def plan(self, inp: HeadInputs) -> HeadPlan:
        ct = torch.zeros(inp.num_rows, dtype=inp.dtype, device=inp.device)
        ct[inp.pos] = inp.target_cosine.detach()
        ct = reduce_target(ct, inp.ctx)
        thresh = margin_fn(self.kind, ct, self.m)
        return HeadPlan(LogitSpec(self._target, scale=self.s, thresh=thresh, hard_a=self.hard_a, hard_b=self.hard_b))
