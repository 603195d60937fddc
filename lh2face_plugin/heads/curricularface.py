"""CurricularFace: adaptive curriculum learning loss (Huang et al., CVPR 2020, arXiv 2004.00288).

ArcFace's target plus hard negatives whose weight grows as training goes::

    T(c_y)  = cos(theta_y + m)                 where c_y > cos(pi - m)
            = c_y - m sin m                    elsewhere (ArcFace's fallback, as the reference code)
    N(c_j)  = c_j                              where c_j <= cos(theta_y + m)
            = c_j (t + c_j)                    where c_j >  cos(theta_y + m)  (a hard negative)
    logits  = s * T(c_y), s * N(c_j)

``t`` is an exponential moving average of the batch's mean target cosine,
``t <- alpha t + (1 - alpha) mean_i c_iy`` with ``t = 0`` at the start and
``alpha = 0.99``, updated (in training mode) before it is used, as in the
reference code. Early in training ``t`` is small and hard negatives are
damped; as the target cosines grow, ``t`` grows and hard negatives weigh more
(the curriculum). ``t`` carries no gradient: a hard negative's gradient is
``s (t + 2 c_j)``. The hard-negative boundary is the plain ``cos(theta_y + m)``
(not the fallback), as in the reference code.

Under Partial FC a class shard needs every row's boundary: the target cosines
are all-reduced once per call (an [N] vector, known on the rank owning the
class), and ``t`` uses the same global values, so every rank holds the same
``t``; in data parallel the batch mean is all-reduced. ``t`` lives in a buffer
(``state_dict``), changed by non-empty training batches only. Unlike the
reference, which also updates ``t`` in evaluation, ``eval()`` freezes it.
"""
from __future__ import annotations

import math

import torch

from ..distributed import reduce_target
from ..layers.contract import HeadInputs, HeadPlan, LogitSpec
from ..registry import register_head
from .angular import cos_plus
from .base import Head
from .hparams import check_positive, check_range
from .running import RunningStat

__all__ = ["CurricularFace", "curricular_target"]

NO_HARD = 2.0  # a boundary above every cosine: rows whose class is on no shard have no hard negatives


def curricular_target(c: torch.Tensor, m: float) -> torch.Tensor:
    """``cos(acos(c) + m)`` where ``c > cos(pi - m)``, else ``c - m sin m``."""
    return torch.where(c > math.cos(math.pi - m), cos_plus(c, m), c - m * math.sin(m))


@register_head("curricularface")
class CurricularFace(Head):
    """CurricularFace logits: ArcFace target, hard negatives ``c (t + c)`` with an adaptive ``t``.

    Args:
        s: logit scale (64).
        m: additive angular margin, radians (0.5).
        alpha: weight of the previous ``t`` in its moving average (0.99).
        check_inputs: validate labels and features on every call.

    Shape:
        cosine [N, C], labels [N] (-1 off-shard) -> :class:`~.base.HeadResult`: logits [N, C]
        float32, stat ``t`` (the value this call used).
    """

    # t is the moving average of the raw target cosine whatever s and m: a resume with other values only warns
    state_hparams = ()

    def __init__(self, s: float = 64.0, m: float = 0.5, alpha: float = 0.99, check_inputs: bool = True):
        super().__init__(check_inputs)
        self.s = check_positive("s", s)
        self.m = check_range("m", m, 0.0, math.pi / 2)
        self.alpha = check_range("alpha", alpha, 0.0, 1.0)
        self.t_stat = RunningStat(self, "t", count=None, momentum=1.0 - self.alpha, first_batch=False)
        self._record(s=self.s, m=self.m, alpha=self.alpha)

    def plan(self, inp: HeadInputs) -> HeadPlan:
        ctx = inp.ctx
        ct = inp.target_cosine.new_zeros(inp.num_rows)
        ct[inp.pos] = inp.target_cosine.detach()
        has = inp.target_cosine.new_zeros(inp.num_rows)
        has[inp.pos] = 1.0
        both = reduce_target(torch.stack([ct, has]), ctx)
        ct, has = both[0], both[1]
        t = float(self.t_stat(ct[has > 0], ctx)[0])
        thresh = torch.where(has > 0, cos_plus(ct, self.m), torch.full_like(ct, NO_HARD))
        s, m = self.s, self.m

        def psi(c):
            return s * curricular_target(c, m)

        spec = LogitSpec(psi, scale=s, thresh=thresh, hard_a=s * (t - 1.0), hard_q=s, hard_b=0.0)
        return HeadPlan(spec, stats={"t": self.t.detach().clone()})
