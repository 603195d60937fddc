"""Paired bootstrap over families, pooled over training seeds, and the "win" rule.

- **Resampling unit: the family.** Pairs of one family (genuine pairs and look-alike
  impostors) are not independent, families are. A replicate draws F families with
  replacement (multinomial weights ``w``, :func:`family_weights`); every metric is computed
  under those weights (:meth:`~lh2face_plugin.bench.scores.ScoreSet.metrics`).
- **Paired.** Every run (each head, each training seed) is scored on the *same* replicates,
  so a difference between heads keeps the families' shared difficulty out of its interval.
- **Seeds pooled inside a replicate.** A head's value in a replicate is the mean over its
  training seeds of the runs' values on that replicate; the head's point estimate is the
  mean over seeds on the whole set. A difference ``head - reference`` is taken replicate by
  replicate; its 95% interval is the 2.5th-97.5th percentile of those differences. The
  interval thus covers the evaluation set's sampling, and, through the mean, the seeds in
  hand; it does not know how much a new seed would move the head.
- **Seed spread.** Per head, the range (max - min) and standard deviation of its per-seed
  point values. For a difference, the larger of the two heads' ranges.
- **Win.** A difference is reported as ``win`` (``loss`` for a negative one) only when its
  interval excludes 0 **and** ``|difference|`` exceeds the seed spread; ``within seed spread``
  when only the first holds; ``no measurable difference`` when the interval holds 0;
  ``needs >= 2 seeds`` when a head has a single seed (its spread is unknown).
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np
from tqdm.auto import tqdm

from .metrics import Difference, Estimate, Interval

__all__ = ["family_weights", "bootstrap_metrics", "percentile_ci", "summarize_heads", "compare_heads", "verdict",
           "contains", "LEVEL"]

LEVEL = 0.95


def family_weights(num_families: int, replicates: int, seed: int = 0) -> np.ndarray:
    """``(replicates, num_families)`` int64 multiplicities of a with-replacement resample of the families."""
    if replicates < 1 or num_families < 1:
        raise ValueError(f"need replicates >= 1 and families >= 1, got {replicates}, {num_families}")
    rng = np.random.default_rng([int(seed), 0x626F6F74])
    return rng.multinomial(num_families, np.full(num_families, 1.0 / num_families), size=replicates)


def bootstrap_metrics(models: Sequence, num_families: int, replicates: int, seed: int = 0, progress: bool = False,
                      desc: str = "bootstrap") -> Tuple[List[Dict[str, float]], List[Dict[str, np.ndarray]]]:
    """Point values and replicate values of every model's metrics, all on the same replicates.

    Args:
        models: objects with ``metrics(w) -> {name: value}`` for family weights ``w`` (F,)
            and ``metrics(None)`` for the whole set (e.g.
            :class:`~lh2face_plugin.bench.scores.ScoreSet`).
    Returns:
        ``point`` (per model ``{metric: value}``) and ``reps`` (per model ``{metric: (B,) array}``).
    """
    weights = family_weights(num_families, replicates, seed)
    point = [m.metrics(None) for m in models]
    reps = [{k: np.empty(replicates) for k in p} for p in point]
    bar = tqdm(total=replicates * len(models), desc=desc, disable=not progress, leave=False, unit="rep")
    for b, w in enumerate(weights):
        for k, m in enumerate(models):
            for name, v in m.metrics(w).items():
                reps[k][name][b] = v
        bar.update(len(models))
    bar.close()
    return point, reps


def percentile_ci(values: np.ndarray, level: float = LEVEL) -> Interval:
    """Percentile interval of bootstrap values (NaN replicates ignored)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return Interval(math.nan, math.nan)
    a = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(v, [a, 100.0 - a])
    return Interval(float(lo), float(hi))


def contains(ci: Sequence[float], estimate: float) -> bool:
    """The interval ``ci`` holds ``estimate`` (``True`` when either is unknown: nothing to report).

    With discrete statistics (TARs at a FAR) the percentile interval of the bootstrap distribution
    can sit beside the whole-set estimate; the report names every such interval.
    """
    lo, hi = ci
    if not all(v is not None and math.isfinite(v) for v in (lo, hi, estimate)):
        return True
    return lo <= estimate <= hi


def _pooled(reps: Sequence[np.ndarray]) -> np.ndarray:
    return np.mean(np.stack([np.asarray(r, dtype=np.float64) for r in reps]), axis=0)


def summarize_heads(point: Mapping[str, Sequence[float]], reps: Mapping[str, Sequence[np.ndarray]],
                    level: float = LEVEL) -> Dict[str, Estimate]:
    """Per head: seed-mean estimate, its bootstrap interval and the seed spread, for one metric.

    Args:
        point: head -> per-seed values on the whole set.
        reps: head -> per-seed arrays of replicate values (same replicates for every head).
    """
    out = {}
    for head, values in point.items():
        v = np.asarray(values, dtype=np.float64)
        ci = percentile_ci(_pooled(reps[head]), level)
        out[head] = Estimate(float(v.mean()), ci, ci.half_width, [float(x) for x in v],
                             float(v.std(ddof=1)) if v.size > 1 else math.nan,
                             float(v.max() - v.min()) if v.size > 1 else math.nan)
    return out


def verdict(diff: float, ci: Sequence[float], spread: float) -> str:
    """The win rule of the module docstring."""
    lo, hi = ci
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "undefined"
    if lo <= 0.0 <= hi:
        return "no measurable difference"
    if not math.isfinite(spread):
        return "needs >= 2 seeds"
    if abs(diff) <= spread:
        return "within seed spread"
    return "win" if diff > 0 else "loss"


def compare_heads(point: Mapping[str, Sequence[float]], reps: Mapping[str, Sequence[np.ndarray]],
                  reference: str, level: float = LEVEL) -> Dict[str, Difference]:
    """Paired differences ``head - reference`` of one metric, seeds pooled per replicate.

    Returns:
        head -> its :class:`~lh2face_plugin.bench.metrics.Difference` (``mde`` not set; ``ci_contains_diff``
        by :func:`contains`: a percentile interval need not contain its estimate).
    """
    if reference not in point:
        raise KeyError(f"reference {reference!r} is not among the heads {sorted(point)}")
    ref_mean = float(np.mean(point[reference]))
    ref_reps = _pooled(reps[reference])
    ref_range = float(np.ptp(point[reference])) if len(point[reference]) > 1 else math.nan
    out = {}
    for head, values in point.items():
        if head == reference:
            continue
        diff = float(np.mean(values)) - ref_mean
        ci = percentile_ci(_pooled(reps[head]) - ref_reps, level)
        head_range = float(np.ptp(values)) if len(values) > 1 else math.nan
        spread = max(head_range, ref_range) if math.isfinite(head_range) and math.isfinite(ref_range) else math.nan
        out[head] = Difference(diff, ci, ci.half_width, spread, verdict(diff, ci, spread), contains(ci, diff))
    return out
