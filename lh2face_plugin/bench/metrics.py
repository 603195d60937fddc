"""Typed metric values of a comparison: an interval, a head's estimate over seeds, a difference to the reference,
the minimal detectable effect.

Each is stored as the JSON object it always was (:meth:`to_dict` / :meth:`from_dict`; ``ci`` as ``[lo, hi]``).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence

__all__ = ["Interval", "Estimate", "Difference", "DetectableEffect"]


def _num(v: Any) -> float:
    """A stored number (``None`` is NaN)."""
    return math.nan if v is None else float(v)


class Interval(NamedTuple):
    """A 95% percentile interval ``[lo, hi]`` (NaN ends when unknown)."""

    lo: float
    hi: float

    @classmethod
    def of(cls, values: Sequence[Any]) -> "Interval":
        lo, hi = values
        return cls(_num(lo), _num(hi))

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2.0


def _to_dict(obj: Any) -> Dict[str, Any]:
    return {f.name: list(v) if isinstance(v, Interval) else v
            for f in dataclasses.fields(obj) for v in (getattr(obj, f.name),)}


@dataclass(frozen=True)
class Estimate:
    """A head's value of one metric: the mean over its training seeds, its bootstrap interval and the seed spread."""

    mean: float
    ci: Interval
    half_width: float
    seed_values: List[float]
    seed_sd: float
    seed_range: float

    def to_dict(self) -> Dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Estimate":
        return cls(_num(d["mean"]), Interval.of(d["ci"]), _num(d["half_width"]),
                   [_num(v) for v in d["seed_values"]], _num(d["seed_sd"]), _num(d["seed_range"]))


@dataclass(frozen=True)
class Difference:
    """``head - reference`` of one metric: the seed-mean difference, its paired interval, the seed spread
    (the larger of the two heads' per-seed ranges), the verdict of the win rule, whether the interval holds
    the difference, and the minimal detectable effect (:mod:`~lh2face_plugin.bench.power`; NaN until set)."""

    diff: float
    ci: Interval
    half_width: float
    seed_spread: float
    verdict: str
    ci_contains_diff: bool
    mde: float = math.nan

    def to_dict(self, *, mde: bool = True) -> Dict[str, Any]:
        d = _to_dict(self)
        if not mde:
            d.pop("mde")
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Difference":
        mde: Optional[Any] = d.get("mde")
        return cls(_num(d["diff"]), Interval.of(d["ci"]), _num(d["half_width"]), _num(d["seed_spread"]),
                   str(d["verdict"]), bool(d["ci_contains_diff"]), _num(mde))


@dataclass(frozen=True)
class DetectableEffect:
    """The minimal detectable effect of one metric over the comparisons (:func:`~lh2face_plugin.bench.power.
    detectable_effect`): its median ``value``, the medians of its two parts, how many comparisons had both,
    and each head's own."""

    value: float
    ci_lower_half: float
    seed_spread: float
    comparisons: int
    per_head: Dict[str, float]

    def to_dict(self) -> Dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DetectableEffect":
        return cls(_num(d["value"]), _num(d["ci_lower_half"]), _num(d["seed_spread"]), int(d["comparisons"]),
                   {str(k): _num(v) for k, v in d["per_head"].items()})
