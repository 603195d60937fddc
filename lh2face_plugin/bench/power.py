"""What a comparison could have detected: the minimal detectable effect under the win rule.

A difference ``head - reference`` is a *win* when its 95% interval excludes 0 and it exceeds
the seed spread (:func:`~lh2face_plugin.bench.bootstrap.verdict`). Had the true difference
been ``d`` instead of the measured ``diff``, the replicate differences would be shifted by
``d - diff`` and the interval with them, ``[lo + d - diff, hi + d - diff]``; it excludes 0 on
the positive side once ``d > diff - lo`` (the interval's lower half-width). The smallest
difference the run could have called a win is therefore

    ``mde = max(diff - lo, seed spread)``,

taken from the achieved interval and spread of each comparison; a bench reports its median
over the comparisons with the reference (the control's included).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from .metrics import DetectableEffect, Difference

__all__ = ["minimal_detectable_effect", "detectable_effect", "MDE_METRICS"]

MDE_METRICS = ("hard_hq_tar@1e-2", "hard_hq_tar@1e-1")
"""The metrics whose minimal detectable effect the bench reports."""


def minimal_detectable_effect(diff: float, ci: Sequence[float], seed_spread: float) -> float:
    """``max(diff - lo, seed_spread)`` for one comparison (NaN when the interval or the spread is unknown)."""
    lo = ci[0]
    if diff is None or lo is None or seed_spread is None:
        return math.nan
    if not (math.isfinite(diff) and math.isfinite(lo) and math.isfinite(seed_spread)):
        return math.nan
    return max(diff - lo, seed_spread)


def detectable_effect(differences: Mapping[str, Mapping[str, Difference]], metric: str) -> DetectableEffect:
    """Median over the comparisons of the minimal detectable effect at ``metric``, and its two parts.

    Args:
        differences: label -> metric -> :class:`~lh2face_plugin.bench.metrics.Difference`.

    Returns:
        ``value`` (median MDE), ``ci_lower_half`` (median ``diff - lo``), ``seed_spread`` (median),
        ``comparisons`` (how many had both parts), ``per_head`` (label -> MDE).
    """
    per_head, halves, spreads = {}, [], []
    for label, per in differences.items():
        d = per[metric]
        mde = minimal_detectable_effect(d.diff, d.ci, d.seed_spread)
        per_head[label] = mde
        if math.isfinite(mde):
            halves.append(d.diff - d.ci.lo)
            spreads.append(d.seed_spread)
    finite = [v for v in per_head.values() if math.isfinite(v)]
    return DetectableEffect(float(np.median(finite)) if finite else math.nan,
                            float(np.median(halves)) if halves else math.nan,
                            float(np.median(spreads)) if spreads else math.nan, len(finite), per_head)
