"""MagFace: magnitude-aware margin and regulariser (Meng et al., CVPR 2021, arXiv 2103.06627).

The feature magnitude becomes a quality score: a larger magnitude gets a
larger angular margin, and a regulariser rewards large magnitudes, so easy
(high-quality) samples end up far from the origin::

    a_i    = clamp(|z_i|, l_a, u_a)
    m(a)   = l_m + (u_m - l_m) (a - l_a) / (u_a - l_a)
    target = s * cos(theta_iy + m(a_i)),   others = s * cos_ij
    L_g    = lambda_g * mean_i g(a_i),   g(a) = 1/a + a / u_a^2

The margin is differentiable in ``a`` (as in the paper and the reference
code): the cross-entropy pulls the magnitude down through ``m(a)``, ``g``
pushes it up, and their balance depends on how easy the sample is. ``a`` is
clamped for both, so magnitudes outside ``[l_a, u_a]`` get no gradient from
either. MagFace's uniqueness result needs ``lambda_g >= s k u_a^2 l_a^2 /
(u_a^2 - l_a^2)`` with ``k = (u_m - l_m) / (u_a - l_a)`` (about 22.6 for the
defaults); a smaller value is accepted with a warning.

Target outside the margin's range. Where ``theta + m`` could pass ``pi``:

- ``easy_margin=True`` (the reference code's default, used by its trainer):
  the margin applies where ``cos theta_y > 0``, elsewhere the target is the
  plain ``s cos theta_y``;
- ``easy_margin=False``: ArcFace's threshold: the margin applies where
  ``cos theta_y > cos(pi - m(a))``, elsewhere ``s (cos theta_y - m(a) sin m(a))``.

Both forms are piecewise; the true gradient is used (no straight-through).
Paper defaults: s = 64, l_a = 10, u_a = 110, l_m = 0.45, u_m = 0.8,
lambda_g = 35 (the reference trainer's default is 20). The regulariser comes
as the term ``g``; under Partial FC each row's ``g`` is counted on the rank
that owns its class, so its value is global and its gradient summed once.
"""
from __future__ import annotations

import math
import warnings

import torch

from ..distributed import global_mean_stat, global_sum
from ..layers.contract import HeadInputs, HeadPlan, LogitSpec
from ..registry import register_head
from .angular import cos_plus
from .base import Head
from .hparams import check_bool, check_positive, check_range

__all__ = ["MagFace", "magface_target"]


def magface_target(c: torch.Tensor, margin: torch.Tensor, easy_margin: bool) -> torch.Tensor:
    """``cos(acos(c) + margin)`` where the margin applies, its fallback elsewhere (see the module docstring)."""
    with_margin = cos_plus(c, margin)
    if easy_margin:
        return torch.where(c > 0, with_margin, c)
    return torch.where(c > torch.cos(math.pi - margin), with_margin, c - margin * torch.sin(margin))


@register_head("magface")
class MagFace(Head):
    """MagFace logits (magnitude-dependent angular margin) and its magnitude regulariser.

    Args:
        s: logit scale (64).
        l_a, u_a: magnitude range (10, 110).
        l_m, u_m: margins at ``l_a`` and ``u_a``, radians (0.45, 0.8).
        lambda_g: weight of the regulariser (35, paper).
        easy_margin: margin only where ``cos theta_y > 0`` (reference default) or ArcFace's threshold.
        check_inputs: validate labels and features on every call.

    Shape:
        cosine [N, C], labels [N] (-1 off-shard), norms [N] (required, differentiable)
        -> :class:`~.base.HeadResult`: logits [N, C] float32, term ``g``, stats ``magnitude``
        and ``margin`` (batch means of ``a`` and ``m(a)``).
    """

    needs_norms = True

    def __init__(self, s: float = 64.0, l_a: float = 10.0, u_a: float = 110.0, l_m: float = 0.45,
                 u_m: float = 0.8, lambda_g: float = 35.0, easy_margin: bool = True, check_inputs: bool = True):
        super().__init__(check_inputs)
        self.s = check_positive("s", s)
        self.l_a = check_positive("l_a", l_a)
        self.u_a = check_range("u_a", u_a, self.l_a, low_open=True)
        self.l_m = check_range("l_m", l_m, 0.0, math.pi / 2)
        self.u_m = check_range("u_m", u_m, self.l_m, math.pi / 2)
        self.lambda_g = check_range("lambda_g", lambda_g, 0.0)
        self.easy_margin = check_bool("easy_margin", easy_margin)
        bound = self.min_lambda_g()
        if 0 < self.lambda_g < bound:
            warnings.warn(f"magface: lambda_g={self.lambda_g:g} is below {bound:.4g} = s*k*u_a^2*l_a^2/(u_a^2-l_a^2), "
                          "the smallest value for which MagFace's theorem guarantees one optimal magnitude per "
                          "sample, growing as the sample gets easier", stacklevel=2)
        self._record(s=self.s, l_a=self.l_a, u_a=self.u_a, l_m=self.l_m, u_m=self.u_m, lambda_g=self.lambda_g,
                     easy_margin=self.easy_margin)

    def min_lambda_g(self) -> float:
        """The smallest ``lambda_g`` of MagFace's uniqueness result for these bounds and scale."""
        k = (self.u_m - self.l_m) / (self.u_a - self.l_a)
        return self.s * k * self.u_a ** 2 * self.l_a ** 2 / (self.u_a ** 2 - self.l_a ** 2)

    def margin(self, a: torch.Tensor) -> torch.Tensor:
        """``m(a)``, linear from ``l_m`` at ``l_a`` to ``u_m`` at ``u_a``."""
        return self.l_m + (self.u_m - self.l_m) * (a - self.l_a) / (self.u_a - self.l_a)

    def regulariser(self, a: torch.Tensor) -> torch.Tensor:
        """``g(a) = 1/a + a / u_a^2``."""
        return 1.0 / a + a / self.u_a ** 2

    def plan(self, inp: HeadInputs) -> HeadPlan:
        ctx = inp.ctx
        a = inp.norms.clamp(self.l_a, self.u_a)
        at = a[inp.pos]
        s, easy, margin = self.s, self.easy_margin, self.margin

        def psi(c, a_t):
            return s * magface_target(c, margin(a_t), easy)

        terms = {}
        if self.lambda_g > 0:
            terms["g"] = self.lambda_g * global_sum(self.regulariser(at).sum(), ctx) / max(1, inp.num_rows)
        with torch.no_grad():
            count = a.new_tensor(float(a.numel()))
            stats = {"magnitude": global_mean_stat(a.sum(), count, ctx),
                     "margin": global_mean_stat(margin(a).sum(), count, ctx)}
        return HeadPlan(LogitSpec(psi, (at,), scale=s), terms, stats=stats)
