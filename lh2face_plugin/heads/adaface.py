"""AdaFace: quality-adaptive margin (Kim et al., CVPR 2022, arXiv 2204.00964).

The feature norm stands for image quality; normalised over the batch it picks
the margin of each sample::

    a_i        = clip(|z_i|, 1e-3, 100)                       (no gradient)
    norm_hat_i = clip(h * (a_i - mu) / (sigma + eps), -1, 1)
    g_angle_i  = -m * norm_hat_i,   g_add_i = m * norm_hat_i + m
    target     = s * (cos(clip(theta_iy + g_angle_i, eps, pi - eps)) - g_add_i)
    others     = s * cos_ij

``norm_hat = -1`` (a low norm) gives ArcFace's ``s cos(theta + m)``, ``0``
CosFace's ``s (cos theta - m)`` and ``+1`` ``s (cos(theta - m) - 2m)``: the
margin's gradient scaling emphasises hard samples when they are of high
quality and de-emphasises them when they are of low quality. ``mu`` and
``sigma`` are exponential moving averages (``momentum``, paper 0.01) of the
batch mean and unbiased standard deviation of ``a``; ``h = 0.333`` puts about
68% of the samples inside ``norm_hat in [-1/3, 1/3]``; ``eps = 1e-3``.

As in the reference code: the norm is detached (the margin carries no
gradient), the target has its true gradient (no straight-through), the
statistics are updated before they are used (so a batch sees its own
statistics at the update rate), and ``a`` is clipped to [1e-3, 100] for them.

Differences from the reference code (mk-minchul/AdaFace, ``head.py``):

- The reference starts the averages at ``mu = 20, sigma = 100`` and, at
  momentum 0.01, needs a few hundred steps to forget that start (its margins
  begin close to CosFace's). Here the first non-empty training batch
  initialises them (as LH2Face's running mean), so the margin is adaptive from
  the first step whatever the backbone's norm scale.
- The reference clamps every cosine to ``+-(1 - 1e-3)``; here only the target
  cosine is clamped, to ``+-(1 - 1e-6)`` before ``acos``; the other logits are
  ``s cos`` unchanged.
- The statistics are global: over the all-gathered batch under Partial FC (the
  rows every rank sees), all-reduced over ranks in data parallel. They are
  updated in training mode only and not by batches with fewer than 2 rows
  (no standard deviation); before the first update the batch's own
  statistics are used.
"""
from __future__ import annotations

import math

import torch

from ..layers.contract import HeadInputs, HeadPlan, LogitSpec
from ..registry import register_head
from .angular import angle
from .base import Head
from .hparams import check_positive, check_range
from .running import RunningStat

__all__ = ["AdaFace", "NORM_CLIP", "EPS"]

NORM_CLIP = (1e-3, 100.0)
EPS = 1e-3


def adaface_target(c: torch.Tensor, g_angle: torch.Tensor, g_add: torch.Tensor, s: float) -> torch.Tensor:
    """``s * (cos(clip(acos(c) + g_angle, eps, pi - eps)) - g_add)``."""
    return s * (torch.cos((angle(c) + g_angle).clamp(EPS, math.pi - EPS)) - g_add)


@register_head("adaface")
class AdaFace(Head):
    """AdaFace logits: an angular-to-additive margin chosen by the normalised feature norm.

    Args:
        s: logit scale (64).
        m: margin (0.4).
        h: concentration of the normalised norm (0.333).
        momentum: update rate of the norm statistics (0.01); the first training batch initialises them.
        check_inputs: validate labels and features on every call.

    Shape:
        cosine [N, C], labels [N] (-1 off-shard), norms [N] (required)
        -> :class:`~.base.HeadResult`: logits [N, C] float32, stats ``norm_mean``, ``norm_std``
        (the statistics this call used).
    """

    needs_norms = True
    # mu and sigma are statistics of the norms alone: their meaning does not depend on s, m, h or
    # the momentum, so a resume with other values only warns
    state_hparams = ()

    def __init__(self, s: float = 64.0, m: float = 0.4, h: float = 0.333, momentum: float = 0.01,
                 check_inputs: bool = True):
        super().__init__(check_inputs)
        self.s = check_positive("s", s)
        self.m = check_range("m", m, 0.0, math.pi / 2)
        self.h = check_positive("h", h)
        self.momentum = check_range("momentum", momentum, 0.0, 1.0, low_open=True)
        self.norm_stat = RunningStat(self, "running_mean", "running_std", momentum=self.momentum, min_rows=2)
        self._record(s=self.s, m=self.m, h=self.h, momentum=self.momentum)

    def norm_hat(self, norms: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """``clip(h * (clip(|z|) - mu) / (sigma + eps), -1, 1)``, detached."""
        a = norms.detach().clamp(*NORM_CLIP)
        return (self.h * (a - mean) / (std + EPS)).clamp(-1.0, 1.0)

    def plan(self, inp: HeadInputs) -> HeadPlan:
        a = inp.norms.detach().clamp(*NORM_CLIP)
        mean, std = self.norm_stat(a, inp.ctx)
        mean = mean if mean is not None else a.new_tensor(0.0)
        std = std if std is not None else a.new_tensor(1.0)
        nh = self.norm_hat(inp.norms, mean, std)[inp.pos]
        g_angle = -self.m * nh
        g_add = self.m * nh + self.m
        s = self.s

        def psi(c, ga, gd):
            return adaface_target(c, ga, gd, s)

        stats = {"norm_mean": mean.detach().clone(), "norm_std": std.detach().clone()}
        return HeadPlan(LogitSpec(psi, (g_angle, g_add), scale=s), stats=stats)
