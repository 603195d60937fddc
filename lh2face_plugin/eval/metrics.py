"""Verification and identification metrics on embeddings and scores.

Every function here is a numpy-2 restatement of a published procedure, written so that
its numbers equal those of the procedure it names (see the docstrings), only faster:

* arcface_torch's verification test (``eval/verification.py``): 10 contiguous folds,
  threshold on the squared L2 distance of unit vectors chosen on nine folds,
  accuracy on the tenth; ``val`` (TAR) at a FAR from a linearly interpolated threshold.
* scikit-learn's ``roc_curve`` (including ``drop_intermediate``) and the IJB rule
  "TAR at the FPR nearest to each target" of arcface_torch's ``eval_ijbc.py`` (kept for
  comparison: it reports a TAR at a FAR the impostors may never reach).
* :func:`far_thresholds`, the one resolvable-FAR rule behind every TAR@FAR this package
  reports (``eval verify``, ``eval ijb``, ``bench``, ``quickstart``).
* open-set identification (TPIR at FPIR, rank-1 / CMC) as defined for IJB-C 1:N
  (Maze et al., "IARPA Janus Benchmark-C", ICB 2018).
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

ACC_THRESHOLDS_STEP = 0.01
VAL_THRESHOLDS_STEP = 0.001
IJB_FARS: Tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
ARCFACE_TORCH_IJB = ("arcface_torch eval_ijbc.py: TAR at the ROC point whose FPR is nearest each target, whether or "
                     "not the impostors resolve that FAR")
ARCFACE_TORCH_VERIFY = ("arcface_torch verification.calculate_val: 10-fold, threshold interpolated on the training "
                        "folds' FAR, whether or not the impostors resolve that FAR")


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm, rows of norm 0 left unchanged.

    Uses the same floating-point operations as ``sklearn.preprocessing.normalize``
    (norm from ``einsum('ij,ij->i')``), so results are bitwise equal to it.

    Args:
        x: ``(N, D)`` float array.
    Returns:
        ``(N, D)`` array of the same dtype.
    """
    x = np.array(x, copy=True)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    norms[norms == 0.0] = 1.0
    x /= norms[:, None]
    return x


def kfold_splits(n: int, folds: int) -> List[np.ndarray]:
    """Test-index blocks of unshuffled K-fold: contiguous, the first ``n % folds`` one longer."""
    if folds < 2 or folds > n:
        raise ValueError(f"need 2 <= folds <= number of pairs, got folds={folds}, pairs={n}")
    sizes = np.full(folds, n // folds, dtype=np.int64)
    sizes[: n % folds] += 1
    edges = np.concatenate([[0], np.cumsum(sizes)])
    return [np.arange(edges[i], edges[i + 1]) for i in range(folds)]


def _accept_counts(dist: np.ndarray, same: np.ndarray, thresholds: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """For each threshold t: (#same pairs with dist < t, #different pairs with dist < t)."""
    pos = np.sort(dist[same])
    neg = np.sort(dist[~same])
    return (np.searchsorted(pos, thresholds, side="left"), np.searchsorted(neg, thresholds, side="left"))


def kfold_accuracy(dist: np.ndarray, same: np.ndarray, folds: int = 10,
                   thresholds: np.ndarray | None = None) -> Dict[str, np.ndarray]:
    """arcface_torch's 10-fold verification accuracy on squared L2 distances.

    For each fold, the threshold maximising accuracy of ``dist < t`` on the other folds
    (first maximum over ``thresholds``) is applied to the fold.

    Args:
        dist: ``(P,)`` float64 squared distances.
        same: ``(P,)`` bool, True for a genuine pair.
        folds: number of contiguous folds.
        thresholds: candidate thresholds; default ``np.arange(0, 4, 0.01)``.
    Returns:
        dict with ``accuracy`` ``(folds,)``, ``threshold`` ``(folds,)``, and the fold-mean
        ``tpr``/``fpr`` curves ``(T,)``.
    """
    if thresholds is None:
        thresholds = np.arange(0, 4, ACC_THRESHOLDS_STEP)
    dist = np.asarray(dist, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    tp_all, fp_all = _accept_counts(dist, same, thresholds)
    n_neg_all = int((~same).sum())
    acc, best, tprs, fprs = [], [], [], []
    for test in kfold_splits(len(dist), folds):
        tp_te, fp_te = _accept_counts(dist[test], same[test], thresholds)
        pos_te = int(same[test].sum())
        neg_te = len(test) - pos_te
        tp_tr, fp_tr = tp_all - tp_te, fp_all - fp_te
        n_tr = len(dist) - len(test)
        acc_tr = (tp_tr + (n_neg_all - neg_te) - fp_tr) / float(n_tr)
        k = int(np.argmax(acc_tr))
        acc.append(float(tp_te[k] + neg_te - fp_te[k]) / float(len(test)))
        best.append(thresholds[k])
        tprs.append(tp_te / pos_te if pos_te else np.zeros(len(thresholds)))
        fprs.append(fp_te / neg_te if neg_te else np.zeros(len(thresholds)))
    return {"accuracy": np.array(acc), "threshold": np.array(best),
            "tpr": np.mean(tprs, 0), "fpr": np.mean(fprs, 0)}


def kfold_val_at_far(dist: np.ndarray, same: np.ndarray, far_target: float, folds: int = 10,
                     thresholds: np.ndarray | None = None) -> Dict[str, float]:
    """arcface_torch's ``calculate_val``: TAR at a target FAR, 10-fold.

    On the training folds the FAR of ``dist < t`` is computed for every candidate ``t``;
    the threshold reaching ``far_target`` is read off the piecewise-linear curve of
    threshold against FAR (``np.interp``: where FAR stays flat, the largest threshold of
    the run), or 0 when the target FAR is never reached; TAR and FAR are then measured on
    the held-out fold.

    arcface_torch makes this call with ``scipy.interpolate.interp1d(kind="slinear")``,
    which scipy >= 1.9 rejects as soon as FAR repeats ("Expect x to not have
    duplicates"), i.e. always; its verification test therefore stops with a
    ``ValueError`` on current scipy.

    Returns:
        dict ``val`` (mean TAR), ``val_std``, ``far`` (mean measured FAR).
    """
    if thresholds is None:
        thresholds = np.arange(0, 4, VAL_THRESHOLDS_STEP)
    dist = np.asarray(dist, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    tp_all, fp_all = _accept_counts(dist, same, thresholds)
    n_neg_all = int((~same).sum())
    vals, fars = [], []
    for test in kfold_splits(len(dist), folds):
        _, fp_te = _accept_counts(dist[test], same[test], thresholds)
        neg_tr = n_neg_all - int((~same[test]).sum())
        if neg_tr == 0:
            raise ValueError("a training split has no different-identity pair; FAR is undefined")
        far_train = (fp_all - fp_te) / float(neg_tr)
        threshold = np.interp(far_target, far_train, thresholds) if np.max(far_train) >= far_target else 0.0
        d, s = dist[test], same[test]
        accept = np.less(d, threshold)
        n_same, n_diff = int(s.sum()), int((~s).sum())
        if n_same == 0 or n_diff == 0:
            raise ValueError("a test fold lacks genuine or impostor pairs; use fewer folds")
        vals.append(float(np.sum(accept & s)) / float(n_same))
        fars.append(float(np.sum(accept & ~s)) / float(n_diff))
    return {"val": float(np.mean(vals)), "val_std": float(np.std(vals)), "far": float(np.mean(fars))}


def roc_curve(labels: np.ndarray, scores: np.ndarray,
              drop_intermediate: bool = True) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC of a binary score, point for point as ``sklearn.metrics.roc_curve``.

    Thresholds are the distinct scores in decreasing order, preceded by ``inf``; with
    ``drop_intermediate`` the points collinear with both neighbours are removed.

    Args:
        labels: ``(P,)`` 1 for genuine, 0 for impostor.
        scores: ``(P,)`` higher means more similar.
    Returns:
        ``fpr``, ``tpr``, ``thresholds``, each ``(K,)`` with ``fpr``/``tpr`` increasing.
    """
    y = np.asarray(labels).ravel() == 1
    s = np.asarray(scores).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in length")
    if y.all() or not y.any():
        raise ValueError("ROC needs both genuine (label 1) and impostor (label 0) pairs")
    order = np.argsort(s, kind="mergesort")[::-1]
    s, y = s[order], y[order]
    cut = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
    tps = np.cumsum(y, dtype=np.float64)[cut]
    fps = 1 + cut - tps
    thr = s[cut]
    if drop_intermediate and len(fps) > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps, thr = fps[keep], tps[keep], thr[keep]
    tps, fps = np.r_[0, tps], np.r_[0, fps]
    thr = np.r_[np.inf, thr]
    return fps / fps[-1], tps / tps[-1], thr


def auc(x: np.ndarray, y: np.ndarray) -> float:
    """Area under a curve by the trapezoidal rule (``x`` monotone)."""
    return float(abs(np.trapezoid(y, x)))


def tar_at_far_nearest(fpr: np.ndarray, tpr: np.ndarray, fars: Iterable[float] = IJB_FARS) -> Dict[float, float]:
    """TAR at the ROC point whose FPR is nearest each target, as ``eval_ijbc.py`` reports it.

    The ROC is scanned from its high-FPR end, and the first point of minimal
    ``|fpr - far|`` wins.
    """
    f, t = np.flipud(np.asarray(fpr)), np.flipud(np.asarray(tpr))
    return {float(far): float(t[int(np.argmin(np.abs(f - far)))]) for far in fars}


class FarPoint(NamedTuple):
    """The operating point of one target FAR (see :func:`far_thresholds`)."""

    threshold: Optional[float]
    """Accept scores ``> threshold``; NaN when the FAR cannot be resolved, ``None`` when a partial
    list of impostors ends before it."""
    far_measured: float
    """Impostor weight accepted at ``threshold`` over the total (NaN when not resolved)."""
    reason: Optional[str]
    """Why the FAR cannot be resolved (``None`` when it can)."""


def _tie_first(desc: np.ndarray) -> np.ndarray:
    """For a sorted array, the index of the first element of each element's tie group."""
    first = np.r_[True, desc[1:] != desc[:-1]]
    return np.maximum.accumulate(np.where(first, np.arange(desc.size), 0))


def far_thresholds(impostor_desc: np.ndarray, fars: Sequence[float], weights: Optional[np.ndarray] = None,
                   total: Optional[float] = None, tie_first: Optional[np.ndarray] = None) -> List[FarPoint]:
    """The one resolvable-FAR rule: for each target FAR, the threshold and the FAR it measures, or why not.

    Scores above the threshold are accepted. The threshold is the lowest impostor score ``t`` with
    ``W(impostors > t) <= floor(FAR * W)`` (``W``: the impostors' total weight, their count
    unweighted), so the measured FAR never exceeds the target. The target is *resolvable* only if
    that accepts at least one impostor, i.e. the highest tie group of impostor scores weighs at most
    ``floor(FAR * W)``: at least ``ceil(1 / FAR)`` impostors, ties counted (a model whose scores all
    tie resolves no FAR below 1). Otherwise the point has a NaN threshold and FAR, and a reason.

    Args:
        impostor_desc: impostor scores in decreasing order (all of them, or the top of them).
        fars: target false accept rates.
        weights: integer weights of the impostors (counts, bootstrap multiplicities); default 1.
        total: the total impostor weight when ``impostor_desc`` is only the top of the scores
            (then a threshold that would fall past its end is ``None``).
        tie_first: :func:`_tie_first` of ``impostor_desc`` (computed when omitted).
    """
    desc = np.asarray(impostor_desc, dtype=np.float64)
    w = np.ones(desc.size) if weights is None else np.asarray(weights, dtype=np.float64)
    complete = total is None
    total = float(w.sum()) if total is None else float(total)
    if desc.size == 0 or total <= 0:
        return [FarPoint(math.nan, math.nan, "no impostor pairs") for _ in fars]
    cum = np.cumsum(w, dtype=np.float64)
    above = (cum - w)[_tie_first(desc) if tie_first is None else tie_first]
    top = float(above[np.argmax(above > 0)]) if (above > 0).any() else total
    out = []
    for far in fars:
        k = int(np.searchsorted(above, math.floor(far * total + 1e-9), side="right")) - 1
        if not complete and k == desc.size - 1:
            out.append(FarPoint(None, math.nan, None))
        elif above[k] > 0:
            out.append(FarPoint(float(desc[k]), float(above[k]) / total, None))
        else:
            need = math.ceil(1 / far - 1e-9)
            why = (f"{total:g} impostor pairs, fewer than the {need} that FAR={far:g} needs" if total < need else
                   f"the {top:g} highest of {total:g} impostor scores are tied: the lowest FAR above 0 that "
                   f"they resolve is {top / total:.3g}")
            out.append(FarPoint(math.nan, math.nan, f"not resolvable: {why}"))
    return out


def tar_at_far(labels: np.ndarray, scores: np.ndarray, fars: Iterable[float]) -> Dict[str, Dict[float, object]]:
    """TAR at each FAR under :func:`far_thresholds`, with the FAR measured there.

    Returns:
        dict ``tar_at_far`` {far: TAR, NaN where not resolvable}, ``far_measured`` {far: FAR},
        ``tar_at_far_unresolved`` {far: reason} for the targets that are not resolvable.
    """
    y = np.asarray(labels).ravel() == 1
    s = np.asarray(scores, dtype=np.float64).ravel()
    gen, imp = s[y], np.sort(s[~y])[::-1]
    fars = [float(f) for f in fars]
    out: Dict[str, Dict[float, object]] = {"tar_at_far": {}, "far_measured": {}, "tar_at_far_unresolved": {}}
    for far, point in zip(fars, far_thresholds(imp, fars)):
        resolved = point.reason is None and gen.size > 0
        out["tar_at_far"][far] = float(np.mean(gen > point.threshold)) if resolved else math.nan
        out["far_measured"][far] = point.far_measured
        if point.reason is not None or not gen.size:
            out["tar_at_far_unresolved"][far] = point.reason or "no genuine pairs"
    return out


def identification(probe_scores: np.ndarray, probe_subjects: np.ndarray, gallery_subjects: np.ndarray,
                   fpirs: Sequence[float] = (0.01, 0.1), ranks: Sequence[int] = (1, 5, 10)) -> Dict[str, object]:
    """Open-set 1:N identification from a probe x gallery similarity matrix.

    A probe is *mated* when its subject appears in the gallery. Rank-k (CMC) is the
    fraction of mated probes whose subject is among the k most similar gallery templates.
    For FPIR ``f`` over the ``N`` non-mated probes, the threshold ``tau`` is the
    ``(floor(f*N)+1)``-th highest non-mated top score (``-inf`` if there are not that
    many); a candidate is returned when its score exceeds ``tau``, so the realised FPIR is
    at most ``f``. TPIR(f) is the fraction of mated probes whose rank-1 candidate is
    their own subject with score ``> tau``.

    Args:
        probe_scores: ``(Q, G)`` similarities.
        probe_subjects: ``(Q,)`` subject ids of the probes.
        gallery_subjects: ``(G,)`` subject ids of the gallery templates.
    Returns:
        dict ``rank`` {k: rate}, ``tpir`` {fpir: rate}, ``threshold`` {fpir: tau},
        ``mated`` and ``non_mated`` counts.
    """
    s = np.asarray(probe_scores, dtype=np.float64)
    ps, gs = np.asarray(probe_subjects), np.asarray(gallery_subjects)
    if s.shape != (len(ps), len(gs)):
        raise ValueError(f"scores have shape {s.shape}, expected ({len(ps)}, {len(gs)})")
    mated = np.isin(ps, gs)
    order = np.argsort(-s, axis=1, kind="stable")
    hit = gs[order] == ps[:, None]
    # no gallery: nobody is mated (argmax of an empty row would raise)
    first_hit = np.where(hit.any(1), hit.argmax(1), s.shape[1]) if s.shape[1] else np.zeros(len(ps), np.int64)
    n_mated = int(mated.sum())
    out: Dict[str, object] = {"mated": n_mated, "non_mated": int((~mated).sum()), "rank": {}, "tpir": {},
                              "threshold": {}}
    for k in ranks:
        out["rank"][int(k)] = float(np.mean(first_hit[mated] < k)) if n_mated else float("nan")
    top = s.max(axis=1) if s.shape[1] else np.full(len(ps), -np.inf)
    nm_top = np.sort(top[~mated])[::-1]
    for f in fpirs:
        k = int(np.floor(f * len(nm_top)))
        tau = float(nm_top[k]) if k < len(nm_top) else -np.inf
        ok = (first_hit == 0) & (top > tau) & mated
        out["threshold"][float(f)] = tau
        out["tpir"][float(f)] = float(ok.sum() / n_mated) if n_mated else float("nan")
    return out
