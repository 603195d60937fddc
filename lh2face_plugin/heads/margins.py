"""Baselines: ArcFace, CosFace and the combined margin of arcface_torch.

Combined margin (Deng et al., ArcFace, CVPR 2019, eq. 4), target logit
``s * (cos(m1 * theta_y + m2) - m3)``, other logits ``s * cos_j``.
``arcface`` is (1, m, 0), ``cosface`` is (1, 0, m).

Gradient semantics. arcface_torch's ``CombinedMarginLoss`` applies the
angular margin under ``no_grad``: the forward value is ``s*cos(theta+m)``
but the gradient w.r.t. the cosine is ``s`` (straight-through). That is the
default here (``straight_through=True``) so baselines reproduce arcface_torch
bit for bit; ``straight_through=False`` gives the true gradient
``s * sin(theta+m)/sin(theta)`` (cosines clamped to (-1+eps, 1-eps) before
acos). CosFace has no angular part, so both modes agree.

``interclass_filtering_threshold``: non-target cosines above the threshold
are zeroed (value and gradient), as arcface_torch's option does. arcface_torch
filters only the rows whose target lives on the same rank, so its loss
changes with the number of GPUs; here every row is filtered, which equals
arcface_torch on one rank and does not depend on the sharding.
"""
from __future__ import annotations

import math

import torch

from ..layers.contract import HeadInputs, HeadPlan, LogitSpec
from ..registry import register_head
from .angular import angle
from .base import Head
from .hparams import check_bool, check_range

__all__ = ["CombinedMargin", "ArcFace", "CosFace", "arc_target"]

def arc_target(c: torch.Tensor, m1: float, m2: float, m3: float) -> torch.Tensor:
    """``cos(m1 * acos(c) + m2) - m3`` with ``c`` clamped inside (-1, 1)."""
    if m1 == 1.0 and m2 == 0.0:
        return c - m3
    return torch.cos(angle(c) * m1 + m2) - m3


@register_head("combined")
class CombinedMargin(Head):
    """Combined angular/additive margin softmax logits.

    Args:
        s: logit scale (arcface_torch: 64).
        m1: multiplicative angular margin (SphereFace), 1 = none.
        m2: additive angular margin (ArcFace), radians.
        m3: additive cosine margin (CosFace).
        interclass_filtering_threshold: 0 = off; see module docstring.
        straight_through: ArcFace gradient as in arcface_torch (see above).
        check_inputs: validate labels and features on every call.

    Shape:
        cosine [N, C], labels [N] (-1 off-shard) -> :class:`~.base.HeadResult` with logits [N, C] float32.
    """

    def __init__(self, s: float = 64.0, m1: float = 1.0, m2: float = 0.5, m3: float = 0.0,
                 interclass_filtering_threshold: float = 0.0, straight_through: bool = True,
                 check_inputs: bool = True):
        super().__init__(check_inputs)
        self.s = check_range("s", s, 0.0, low_open=True)
        self.m1 = check_range("m1", m1, 0.0, low_open=True)
        self.m2 = check_range("m2", m2, 0.0, math.pi / 2)
        self.m3 = check_range("m3", m3, 0.0, 1.0)
        self.filter_threshold = check_range("interclass_filtering_threshold", interclass_filtering_threshold, 0.0, 1.0)
        self.straight_through = check_bool("straight_through", straight_through)
        self._record(s=self.s, m1=self.m1, m2=self.m2, m3=self.m3,
                     interclass_filtering_threshold=self.filter_threshold, straight_through=self.straight_through)

    def _psi(self, c: torch.Tensor) -> torch.Tensor:
        t = self.s * arc_target(c, self.m1, self.m2, self.m3)
        if self.straight_through and (self.m1 != 1.0 or self.m2 != 0.0):
            return self.s * c - self.s * self.m3 + (t - self.s * c + self.s * self.m3).detach()
        return t

    def plan(self, inp: HeadInputs) -> HeadPlan:
        thresh, hard_a = None, 0.0
        if self.filter_threshold > 0:
            thresh = torch.full((inp.num_rows,), self.filter_threshold, dtype=inp.dtype, device=inp.device)
            hard_a = -self.s
        return HeadPlan(LogitSpec(self._psi, scale=self.s, thresh=thresh, hard_a=hard_a))


@register_head("arcface")
class ArcFace(CombinedMargin):
    """ArcFace: target logit ``s*cos(theta_y + m)`` (Deng et al., CVPR 2019).

    Args:
        s: scale (64). m: additive angular margin in radians (0.5).
        straight_through: arcface_torch's gradient (default) or the true one.
    """

    def __init__(self, s: float = 64.0, m: float = 0.5, straight_through: bool = True,
                 interclass_filtering_threshold: float = 0.0, check_inputs: bool = True):
        m = check_range("m", m, 0.0, math.pi / 2)  # named as the user wrote it, not m2
        super().__init__(s, 1.0, m, 0.0, interclass_filtering_threshold, straight_through, check_inputs)


@register_head("cosface")
class CosFace(CombinedMargin):
    """CosFace / AM-Softmax: target logit ``s*(cos_y - m)`` (Wang et al., CVPR 2018).

    Args:
        s: scale (64). m: additive cosine margin (0.4).
    """

    def __init__(self, s: float = 64.0, m: float = 0.4, interclass_filtering_threshold: float = 0.0,
                 check_inputs: bool = True):
        m = check_range("m", m, 0.0, 1.0)  # named as the user wrote it, not m3
        super().__init__(s, 1.0, 0.0, m, interclass_filtering_threshold, True, check_inputs)
