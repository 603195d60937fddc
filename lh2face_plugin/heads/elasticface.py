"""ElasticFace: elastic margin loss (Boutros et al., CVPRW 2022, arXiv 2109.09416).

Each training call draws one margin per sample from a normal distribution::

    m_i ~ N(m, sigma^2)
    ElasticFace-Arc:  target s * cos(theta_iy + m_i)
    ElasticFace-Cos:  target s * (cos theta_iy - m_i)
    others            s * cos theta_ij

The "+" variants (``plus=True``) sort the batch's drawn margins and give the largest to the
samples with the smallest (detached) target cosine, the farthest from their class centre.
Margins carry no gradient; the target has its true gradient (cosines clamped inside (-1, 1)
before ``acos``). In evaluation mode every margin is ``m``.

Draws are reproducible and identical on every rank: call ``k`` of a training run draws from a
generator seeded with ``(seed, k)``, and ``k`` (``steps``) is a buffer, so a resumed run draws
what the uninterrupted run would have. Under Partial FC every rank draws for the whole
gathered batch and, for "+", sorts by the target cosines made known on every rank (one
all-reduce of N values). Defaults follow the paper: s = 64; m = 0.5 (Arc) or 0.35 (Cos);
sigma = 0.05, or the smaller 0.0175 (Arc+) and 0.025 (Cos+).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from ..distributed import reduce_target
from ..layers.contract import HeadInputs, HeadPlan, LogitSpec
from ..registry import register_head
from .angular import cos_plus
from .base import Head
from .hparams import check_bool, check_choice, check_int, check_positive, check_range

__all__ = ["ElasticFace"]

_DEFAULT_M = {"arc": 0.5, "cos": 0.35}
_DEFAULT_SIGMA = {("arc", False): 0.05, ("cos", False): 0.05, ("arc", True): 0.0175, ("cos", True): 0.025}


@register_head("elasticface")
class ElasticFace(Head):
    """ElasticFace-Arc / ElasticFace-Cos logits with a per-sample normal margin.

    Args:
        s: logit scale (64).
        m: mean margin; default 0.5 (arc, radians) or 0.35 (cos).
        sigma: standard deviation of the margin; default 0.05, or 0.0175 / 0.025 with ``plus``.
        margin_type: ``"arc"`` (angular) or ``"cos"`` (additive cosine).
        plus: the "+" variant: margins sorted against the target cosines.
        seed: seed of the margin draws.
        check_inputs: validate labels and features on every call.

    Shape:
        cosine [N, C], labels [N] (-1 off-shard) -> logits [N, C] float32 (``head(cosine, labels)``),
        stat ``margin`` (the mean margin of the call).
    """

    def __init__(self, s: float = 64.0, m: Optional[float] = None, sigma: Optional[float] = None,
                 margin_type: str = "arc", plus: bool = False, seed: int = 0, check_inputs: bool = True):
        super().__init__(check_inputs)
        self.margin_type = check_choice("margin_type", margin_type, ("arc", "cos"))
        self.plus = check_bool("plus", plus)
        self.s = check_positive("s", s)
        self.m = check_range("m", _DEFAULT_M[margin_type] if m is None else m, 0.0,
                             math.pi / 2 if margin_type == "arc" else 1.0)
        self.sigma = check_range("sigma", _DEFAULT_SIGMA[margin_type, self.plus] if sigma is None else sigma, 0.0)
        self.seed = check_int("seed", seed, 0)
        self.register_buffer("steps", torch.tensor(0, dtype=torch.long))
        self._record(s=self.s, m=self.m, sigma=self.sigma, margin_type=margin_type, plus=self.plus, seed=self.seed)

    def draw(self, step: int, n: int) -> torch.Tensor:
        """The [n] float64 margins ``m + sigma * z`` of training call ``step`` (before any sorting)."""
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + int(step)) % (2 ** 63))
        return self.m + self.sigma * torch.randn(n, generator=gen, dtype=torch.float64)

    def margins(self, inp: HeadInputs) -> torch.Tensor:
        """The [N] margins of this call's rows (advancing ``steps`` in training mode)."""
        n = inp.num_rows
        if not self.training or n == 0:
            return torch.full((n,), self.m, dtype=inp.dtype, device=inp.device)
        drawn = self.draw(int(self.steps), n).to(dtype=inp.dtype, device=inp.device)
        self.steps += 1
        if not self.plus:
            return drawn
        ct = torch.zeros(n, dtype=inp.dtype, device=inp.device)
        ct[inp.pos] = inp.target_cosine.detach()
        ct = reduce_target(ct, inp.ctx)
        out = torch.empty_like(drawn)
        out[torch.argsort(ct, stable=True)] = torch.sort(drawn, descending=True).values
        return out

    def plan(self, inp: HeadInputs) -> HeadPlan:
        margins = self.margins(inp)
        s, arc = self.s, self.margin_type == "arc"

        def psi(c, mt):
            if arc:
                return s * cos_plus(c, mt)
            return s * (c - mt)

        stats = {"margin": margins.mean() if margins.numel() else margins.new_tensor(self.m)}
        return HeadPlan(LogitSpec(psi, (margins[inp.pos],), scale=s), stats=stats)
