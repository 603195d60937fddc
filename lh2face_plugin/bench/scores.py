"""Pair scores of one model on the evaluation set and its metrics under family weights.

Every metric takes family weights ``w`` (F,) (1 each for the plain estimate, the
multiplicities of a bootstrap resample otherwise): a pair inside family ``f`` counts ``w_f``
times, a pair between families ``f != g`` counts ``w_f * w_g`` times (one copy of each
family pairs with one copy of the other; copies of one family are not paired with each
other), an image counts ``w_f`` times.

- **TAR@FAR.** The threshold ``t`` is the lowest impostor score with
  ``W(impostors > t) <= floor(FAR * W(impostors))``; TAR = ``W(genuine > t) / W(genuine)``.
  Unweighted, ``t`` is the ``(floor(FAR * n) + 1)``-th highest impostor score, so the realised
  FAR never exceeds the target; a FAR the impostors cannot resolve (no impostor accepted) gives
  NaN (:func:`lh2face_plugin.eval.metrics.far_thresholds`, the one rule).
- **AUC.** ``P(genuine > impostor) + P(tie) / 2`` (Mann-Whitney), weighted.
- **Spearman rho.** Pearson correlation of average ranks over the images, each image
  repeated ``w_f`` times.

The ``all_hq`` and ``overall`` impostor sets have millions of pairs; only their highest
scores can set a threshold at FAR <= 1e-3, so the top ``tail`` of them are kept (with a
check that the threshold falls inside the kept tail; if not, the metric falls back to
every pair).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..eval.metrics import far_thresholds, roc_curve
from .evalset import EvalSet

__all__ = ["PairIndex", "ScoreSet", "METRICS", "threshold_at_far", "thresholds_at_far", "pair_weight_table", "weighted_tar_at_far", "weighted_auc",
           "spearman", "average_ranks"]

METRICS: Dict[str, str] = {
    "hard_hq_tar@1e-1": "hard-HQ TAR at FAR=1e-1 (thresholds from HQ look-alike impostors)",
    "hard_hq_tar@1e-2": "hard-HQ TAR at FAR=1e-2 (thresholds from HQ look-alike impostors)",
    "hard_hq_auc": "hard-HQ ROC AUC",
    "yawed_tar@1e-1": "hard-HQ TAR at FAR=1e-1 on the yawed pairs (genuine and impostors with a yawed image)",
    "yawed_tar@1e-2": "hard-HQ TAR at FAR=1e-2 on the yawed pairs",
    "all_hq_tar@1e-3": "all-HQ TAR at FAR=1e-3 (HQ genuine pairs; every HQ impostor pair)",
    "overall_tar@1e-3": "overall TAR at FAR=1e-3 (every pair of every image, HQ and LQ)",
    "rho_norm_quality": "Spearman rho(raw feature norm, image quality) over the images",
    "rho_norm_abs_yaw": "Spearman rho(raw feature norm, |yaw|) over the images",
}
"""Metric keys (in table order) and what they measure; TARs and AUC are fractions in [0, 1]."""


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties get the average of their ranks (``scipy.stats.rankdata`` 'average')."""
    x = np.asarray(x)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    first = np.r_[True, xs[1:] != xs[:-1]]
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], x.size]
    avg = (starts + ends + 1) / 2.0
    ranks = np.empty(x.size)
    ranks[order] = avg[np.cumsum(first) - 1]
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho with average ranks (NaN when one side is constant)."""
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry) / den if den > 0 else math.nan


def _tie_first(desc: np.ndarray) -> np.ndarray:
    """For a sorted array, the index of the first element of each element's tie group."""
    first = np.r_[True, desc[1:] != desc[:-1]]
    return np.maximum.accumulate(np.where(first, np.arange(desc.size), 0))


def thresholds_at_far(imp_desc: np.ndarray, imp_w: np.ndarray, fars: Sequence[float], total: Optional[float] = None,
                      tie_first: Optional[np.ndarray] = None) -> List[Optional[float]]:
    """For each FAR, the threshold of :func:`lh2face_plugin.eval.metrics.far_thresholds` (the one rule).

    Args:
        imp_desc: impostor scores sorted in decreasing order (all of them, or the top of them).
        imp_w: their weights (integers: counts or bootstrap multiplicities).
        fars: target false accept rates.
        total: total impostor weight (default ``imp_w.sum()``, i.e. ``imp_desc`` is complete).
        tie_first: :func:`_tie_first` of ``imp_desc`` (computed when omitted).
    Returns:
        ``t`` per FAR; None where ``imp_desc`` is a top part that ends before the threshold,
        NaN without impostors or where they cannot resolve the FAR.
    """
    return [p.threshold for p in far_thresholds(imp_desc, fars, imp_w, total, tie_first)]


def threshold_at_far(imp_desc: np.ndarray, imp_w: np.ndarray, far: float, total: Optional[float] = None,
                     tie_first: Optional[np.ndarray] = None) -> Optional[float]:
    """:func:`thresholds_at_far` for one FAR."""
    return thresholds_at_far(imp_desc, imp_w, (far,), total, tie_first)[0]


def weighted_tar_at_far(gen: np.ndarray, gen_w: np.ndarray, imp: np.ndarray, imp_w: np.ndarray,
                        far: float) -> float:
    """TAR at FAR for weighted genuine and impostor scores (any order)."""
    order = np.argsort(-imp, kind="mergesort")
    t = threshold_at_far(imp[order], imp_w[order], far)
    return float(gen_w[gen > t].sum() / gen_w.sum()) if gen_w.sum() > 0 and t == t else math.nan


def weighted_auc(gen: np.ndarray, gen_w: np.ndarray, imp: np.ndarray, imp_w: np.ndarray) -> float:
    """Weighted ``P(genuine > impostor) + P(tie) / 2``."""
    order = np.argsort(imp, kind="mergesort")
    s, cw = imp[order], np.r_[0.0, np.cumsum(imp_w[order], dtype=np.float64)]
    lo, hi = np.searchsorted(s, gen, "left"), np.searchsorted(s, gen, "right")
    below = cw[lo] + 0.5 * (cw[hi] - cw[lo])
    den = float(gen_w.sum()) * cw[-1]
    return float(gen_w @ below) / den if den > 0 else math.nan


@dataclass
class PairIndex:
    """The evaluation set's pair structure, shared by every model (built once).

    Attributes:
        family: (N,) family of each image; ``num_families`` F.
        hard_gen, hard_imp: (P, 2) int32 image pairs of the ``hard_hq`` split;
        hard_gen_yawed, hard_imp_yawed: (P,) bool, the pair has a yawed image.
        all_gen: (P, 2) genuine pairs of the ``overall`` split.
        hq_imp, all_imp: (P, 2) every impostor pair among HQ images / all images.
        within_hq, within_all: (F,) impostor pairs inside each family (HQ / all images).
        per_family_hq, per_family_all: (F,) images per family.
    """

    family: np.ndarray
    num_families: int
    hard_gen: np.ndarray
    hard_imp: np.ndarray
    hard_gen_yawed: np.ndarray
    hard_imp_yawed: np.ndarray
    all_gen: np.ndarray
    hq_imp: np.ndarray
    all_imp: np.ndarray
    within_hq: np.ndarray
    within_all: np.ndarray
    per_family_hq: np.ndarray
    per_family_all: np.ndarray

    @classmethod
    def build(cls, ev: EvalSet) -> "PairIndex":
        n = len(ev)
        i, j = np.triu_indices(n, 1)
        i, j = i.astype(np.int32), j.astype(np.int32)
        same_id = ev.identity[i] == ev.identity[j]
        same_fam = ev.family[i] == ev.family[j]
        both_hq = ev.hq[i] & ev.hq[j]
        yawed = ev.yawed[i] | ev.yawed[j]
        pairs = np.stack([i, j], 1)
        f = ev.num_families
        hard_gen, hard_imp = both_hq & same_id, both_hq & same_fam & ~same_id
        fam_i = ev.family[i]
        return cls(
            family=ev.family.astype(np.int64), num_families=f,
            hard_gen=pairs[hard_gen], hard_imp=pairs[hard_imp],
            hard_gen_yawed=yawed[hard_gen], hard_imp_yawed=yawed[hard_imp],
            all_gen=pairs[same_id], hq_imp=pairs[both_hq & ~same_id], all_imp=pairs[~same_id],
            within_hq=np.bincount(fam_i[hard_imp], minlength=f).astype(np.float64),
            within_all=np.bincount(fam_i[same_fam & ~same_id], minlength=f).astype(np.float64),
            per_family_hq=np.bincount(ev.family[ev.hq], minlength=f).astype(np.float64),
            per_family_all=np.bincount(ev.family, minlength=f).astype(np.float64))


@dataclass
class _Split:
    """Genuine and impostor scores of one split, pre-sorted, with the family of each pair."""

    gen: np.ndarray          # ascending
    gen_fam: np.ndarray
    imp_desc: np.ndarray     # descending
    imp_code: np.ndarray     # family-pair code fa * F + fb of each impostor (see pair_weight_table)
    imp_tie: np.ndarray
    auc_lo: Optional[np.ndarray] = None
    auc_hi: Optional[np.ndarray] = None
    auc_order: Optional[np.ndarray] = None   # ascending impostor order as indices into imp_desc
    complete: bool = True                    # imp_desc holds every impostor
    within: Optional[np.ndarray] = None      # per-family impostor counts inside a family
    per_family: Optional[np.ndarray] = None  # per-family image counts (for cross-family pairs)
    full: Optional[Callable[[], Tuple[np.ndarray, np.ndarray]]] = None  # every impostor (desc, code), on demand

    def imp_total(self, w: np.ndarray, table: np.ndarray) -> float:
        if self.complete:
            return float(table[self.imp_code].sum())
        s = w * self.per_family
        return float(w @ self.within) + 0.5 * (float(s.sum()) ** 2 - float(s @ s))

    def tar(self, w: np.ndarray, fars: Sequence[float], table: np.ndarray) -> List[float]:
        """Weighted TAR at each FAR."""
        gw = w[self.gen_fam]
        gsum = float(gw.sum())
        if gsum <= 0:
            return [math.nan for _ in fars]
        ts = thresholds_at_far(self.imp_desc, table[self.imp_code], fars,
                               None if self.complete else self.imp_total(w, table), self.imp_tie)
        if any(t is None for t in ts):  # the kept tail is too short for this resample: use every impostor
            desc, code = self.full()
            ts = thresholds_at_far(desc, table[code], fars)
        tail = np.cumsum(gw[::-1])[::-1]  # tail[k] = weight of genuine scores from position k up
        out = []
        for t in ts:
            k = int(np.searchsorted(self.gen, t, side="right")) if t == t else -1
            out.append(math.nan if k < 0 else (float(tail[k]) / gsum if k < gw.size else 0.0))
        return out

    def far_measured(self, fars: Sequence[float], table: np.ndarray, num_families: int) -> List[float]:
        """The FAR each target measures on the whole set (every family once): the impostor weight
        accepted at :meth:`tar`'s threshold over the total, NaN where the target is not resolvable."""
        w = np.ones(num_families)
        points = far_thresholds(self.imp_desc, fars, table[self.imp_code],
                                None if self.complete else self.imp_total(w, table), self.imp_tie)
        if any(p.threshold is None for p in points):
            desc, code = self.full()
            points = far_thresholds(desc, fars, table[code])
        return [float(p.far_measured) for p in points]

    def auc(self, w: np.ndarray, table: np.ndarray) -> float:
        gw = w[self.gen_fam]
        iw = table[self.imp_code[self.auc_order]]
        cw = np.r_[0.0, np.cumsum(iw, dtype=np.float64)]
        below = cw[self.auc_lo] + 0.5 * (cw[self.auc_hi] - cw[self.auc_lo])
        den = float(gw.sum()) * float(cw[-1])
        return float(gw @ below) / den if den > 0 else math.nan


def pair_weight_table(w: np.ndarray) -> np.ndarray:
    """Flat (F*F,) table: entry ``fa * F + fb`` is a pair's weight, ``w_fa`` inside a family
    (``fa == fb``), ``w_fa * w_fb`` across families."""
    t = np.outer(w, w)
    np.fill_diagonal(t, w)
    return t.ravel()


def _split(scores_gen: np.ndarray, fam_gen: np.ndarray, scores_imp: np.ndarray, code: np.ndarray,
           *, auc: bool = False, tail: Optional[int] = None, within=None, per_family=None,
           full=None) -> _Split:
    g = np.argsort(scores_gen, kind="mergesort")
    complete = tail is None or tail >= scores_imp.size
    if complete:
        order = np.argsort(-scores_imp, kind="mergesort")
    else:
        top = np.argpartition(-scores_imp, tail)[:tail]
        order = top[np.argsort(-scores_imp[top], kind="mergesort")]
    desc = scores_imp[order]
    sp = _Split(scores_gen[g], fam_gen[g], desc, code[order], _tie_first(desc), complete=complete,
                within=within, per_family=per_family, full=None if complete else full)
    if auc:
        asc = np.argsort(desc, kind="mergesort")
        s = desc[asc]
        sp.auc_order, sp.auc_lo, sp.auc_hi = asc, np.searchsorted(s, sp.gen, "left"), np.searchsorted(s, sp.gen, "right")
    return sp


def _every_impostor(unit: np.ndarray, pairs: np.ndarray, code: np.ndarray):
    """Deferred: every impostor score of ``pairs``, decreasing, with its family-pair code."""
    def compute():
        s = (unit @ unit.T)[pairs[:, 0], pairs[:, 1]].astype(np.float64)
        order = np.argsort(-s, kind="mergesort")
        return s[order], code[order]
    return compute


class _RankPrep:
    """Average ranks of ``x`` under integer replication counts, without sorting again.

    With counts ``c``, the tie group of value ``v`` occupies ranks ``S_<(v) + 1 .. S_<=(v)`` of
    the replicated sample, so its members' average rank is ``S_<(v) + (S_=(v) + 1) / 2``.
    """

    def __init__(self, x: np.ndarray) -> None:
        self.order = np.argsort(x, kind="mergesort")
        xs = x[self.order]
        self.group = np.cumsum(np.r_[True, xs[1:] != xs[:-1]]) - 1
        self.groups = int(self.group[-1]) + 1 if x.size else 0

    def ranks(self, c: np.ndarray) -> np.ndarray:
        gsum = np.bincount(self.group, weights=c[self.order], minlength=self.groups)
        below = np.cumsum(gsum) - gsum
        r = np.empty(self.order.size)
        r[self.order] = (below + (gsum + 1.0) / 2.0)[self.group]
        return r


def _weighted_pearson(x: np.ndarray, y: np.ndarray, c: np.ndarray) -> float:
    n = c.sum()
    if n <= 0:
        return math.nan
    dx, dy = x - (c @ x) / n, y - (c @ y) / n
    den = math.sqrt(float(c @ (dx * dx)) * float(c @ (dy * dy)))
    return float(c @ (dx * dy)) / den if den > 0 else math.nan


@dataclass
class ScoreSet:
    """One model's scores on the evaluation set, ready for weighted metrics.

    Build with :meth:`from_features`; :meth:`metrics` gives every :data:`METRICS` value for
    family weights ``w``.
    """

    splits: Dict[str, _Split]
    family: np.ndarray
    norm: np.ndarray
    quality: np.ndarray
    abs_yaw: np.ndarray
    num_families: int
    ranks: Dict[str, "_RankPrep"]

    @classmethod
    def from_features(cls, features: np.ndarray, ev: EvalSet, index: PairIndex,
                      tail_fraction: float = 0.005, min_tail: int = 1000) -> "ScoreSet":
        """Cosine scores of every pair from raw ``features`` (N, D); norms before normalisation.

        Args:
            tail_fraction, min_tail: the ``all_hq``/``overall`` impostors kept for thresholds,
                ``max(min_tail, tail_fraction * count)`` (5x what FAR = 1e-3 needs; a resample
                that needs more falls back to every pair).
        """
        feats = np.asarray(features, dtype=np.float32)
        if feats.ndim != 2 or feats.shape[0] != len(ev):
            raise ValueError(f"features must be ({len(ev)}, D), got {feats.shape}")
        norm = np.linalg.norm(feats.astype(np.float64), axis=1)
        unit = (feats / np.maximum(norm, 1e-12)[:, None].astype(np.float32)).astype(np.float32)
        sim = unit @ unit.T
        fam, f = index.family, index.num_families

        def score(pairs):
            return sim[pairs[:, 0], pairs[:, 1]].astype(np.float64)

        def code(pairs):
            return (fam[pairs[:, 0]] * f + fam[pairs[:, 1]]).astype(np.int64)

        gen_h, imp_h = score(index.hard_gen), score(index.hard_imp)
        gf, ic = fam[index.hard_gen[:, 0]], code(index.hard_imp)
        yg, yi = index.hard_gen_yawed, index.hard_imp_yawed
        splits = {"hard_hq": _split(gen_h, gf, imp_h, ic, auc=True),
                  "yawed": _split(gen_h[yg], gf[yg], imp_h[yi], ic[yi])}
        for name, gen_pairs, imp_pairs, within, per in (
                ("all_hq", index.hard_gen, index.hq_imp, index.within_hq, index.per_family_hq),
                ("overall", index.all_gen, index.all_imp, index.within_all, index.per_family_all)):
            tail = max(int(min_tail), int(math.ceil(tail_fraction * imp_pairs.shape[0])))
            c = code(imp_pairs)
            splits[name] = _split(score(gen_pairs), fam[gen_pairs[:, 0]], score(imp_pairs), c, tail=tail,
                                  within=within, per_family=per, full=_every_impostor(unit, imp_pairs, c))
        quality = ev.quality.astype(np.float64)
        abs_yaw = np.abs(ev.yaw).astype(np.float64)
        return cls(splits, fam, norm, quality, abs_yaw, f,
                   {"norm": _RankPrep(norm), "quality": _RankPrep(quality), "abs_yaw": _RankPrep(abs_yaw)})

    def metrics(self, w: Optional[np.ndarray] = None) -> Dict[str, float]:
        """Every :data:`METRICS` value under family weights ``w`` (default: 1 each)."""
        w = np.ones(self.num_families) if w is None else check_weights(w, self.num_families)
        table = pair_weight_table(w)
        h, y = self.splits["hard_hq"], self.splits["yawed"]
        c = w[self.family]
        rn = self.ranks["norm"].ranks(c)
        h1, h2 = h.tar(w, (1e-1, 1e-2), table)
        y1, y2 = y.tar(w, (1e-1, 1e-2), table)
        return {
            "hard_hq_tar@1e-1": h1, "hard_hq_tar@1e-2": h2, "hard_hq_auc": h.auc(w, table),
            "yawed_tar@1e-1": y1, "yawed_tar@1e-2": y2,
            "all_hq_tar@1e-3": self.splits["all_hq"].tar(w, (1e-3,), table)[0],
            "overall_tar@1e-3": self.splits["overall"].tar(w, (1e-3,), table)[0],
            "rho_norm_quality": _weighted_pearson(rn, self.ranks["quality"].ranks(c), c),
            "rho_norm_abs_yaw": _weighted_pearson(rn, self.ranks["abs_yaw"].ranks(c), c),
        }

    def far_measured(self) -> Dict[str, float]:
        """The FAR measured beside each TAR of :meth:`metrics` on the whole set (``{metric: far}``)."""
        table = pair_weight_table(np.ones(self.num_families))
        out: Dict[str, float] = {}
        for split, fars in (("hard_hq", (1e-1, 1e-2)), ("yawed", (1e-1, 1e-2)), ("all_hq", (1e-3,)),
                            ("overall", (1e-3,))):
            for far, value in zip(fars, self.splits[split].far_measured(fars, table, self.num_families)):
                out[f"{split}_tar@{far:.0e}".replace("e-0", "e-")] = value
        return out

    def roc(self, split: str = "hard_hq") -> Tuple[np.ndarray, np.ndarray]:
        """Unweighted ROC (fpr, tpr) of a split, for plots."""
        sp = self.splits[split]
        if not sp.complete:
            raise ValueError(f"split {split!r} keeps only its highest impostor scores; no full ROC")
        labels = np.r_[np.ones(sp.gen.size), np.zeros(sp.imp_desc.size)]
        fpr, tpr, _ = roc_curve(labels, np.r_[sp.gen, sp.imp_desc])
        return fpr, tpr

    def summary(self) -> Dict[str, float]:
        """Descriptive numbers that are not bootstrapped (mean norms of HQ and LQ images)."""
        hq = self.quality >= 0.5
        return {"mean_norm_hq": float(self.norm[hq].mean()) if hq.any() else math.nan,
                "mean_norm_lq": float(self.norm[~hq].mean()) if (~hq).any() else math.nan}


def check_weights(w: Sequence[float], num_families: int) -> np.ndarray:
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (num_families,) or (w < 0).any() or (w != np.round(w)).any():
        raise ValueError(f"family weights must be {num_families} non-negative integers")
    return w
