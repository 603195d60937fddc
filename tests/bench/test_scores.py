"""Weighted pair metrics against naive references written from their definitions."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lh2face_plugin.bench.bootstrap import family_weights
from lh2face_plugin.bench.scores import (PairIndex, ScoreSet, average_ranks, spearman, threshold_at_far,
                                         weighted_auc, weighted_tar_at_far)


# ----------------------------------------------------------------------------- naive references
def naive_tar(gen, imp, far):
    """Lists with repeats: t = lowest impostor score with #(impostors > t) <= floor(far * n); TAR = #(gen > t)/n."""
    limit = math.floor(far * len(imp) + 1e-9)
    t = min(s for s in imp if sum(x > s for x in imp) <= limit)
    if not any(x > t for x in imp):  # no impostor accepted: the FAR is not resolvable (eval.metrics.far_thresholds)
        return math.nan
    return sum(g > t for g in gen) / len(gen)


def naive_auc(gen, imp):
    return sum((g > i) + 0.5 * (g == i) for g in gen for i in imp) / (len(gen) * len(imp))


def naive_spearman(x, y):
    def ranks(v):
        return np.array([1 + sum(u < a for u in v) + (sum(u == a for u in v) - 1) / 2 for a in v])
    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def naive_metrics(feats, ev, w):
    """Every metric from the definitions: loop over all pairs, repeat each pair by its weight
    (inside a family w_f, across families w_f * w_g) and each image by w_f."""
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    split = {k: ([], []) for k in ("hard_hq", "yawed", "all_hq", "overall")}
    n = len(ev)
    for i in range(n):
        for j in range(i + 1, n):
            fi, fj = ev.family[i], ev.family[j]
            rep = int(w[fi]) if fi == fj else int(w[fi] * w[fj])
            s = float(unit[i] @ unit[j])
            same, hq = ev.identity[i] == ev.identity[j], ev.hq[i] and ev.hq[j]
            yawed = abs(ev.yaw[i]) >= 30 or abs(ev.yaw[j]) >= 30
            lab = 0 if same else 1
            if hq and fi == fj:
                split["hard_hq"][lab].extend([s] * rep)
                if yawed:
                    split["yawed"][lab].extend([s] * rep)
            if hq:
                split["all_hq"][lab].extend([s] * rep)
            split["overall"][lab].extend([s] * rep)
    reps = np.repeat(np.arange(n), w[ev.family].astype(int))
    norm = np.linalg.norm(feats, axis=1)
    hg, hi = split["hard_hq"]
    return {"hard_hq_tar@1e-1": naive_tar(hg, hi, 0.1), "hard_hq_tar@1e-2": naive_tar(hg, hi, 0.01),
            "hard_hq_auc": naive_auc(hg, hi),
            "yawed_tar@1e-1": naive_tar(*split["yawed"], 0.1), "yawed_tar@1e-2": naive_tar(*split["yawed"], 0.01),
            "all_hq_tar@1e-3": naive_tar(*split["all_hq"], 1e-3),
            "overall_tar@1e-3": naive_tar(*split["overall"], 1e-3),
            "rho_norm_quality": naive_spearman(norm[reps], ev.quality[reps].astype(float)),
            "rho_norm_abs_yaw": naive_spearman(norm[reps], np.abs(ev.yaw[reps]).astype(float))}


# ----------------------------------------------------------------------------- hand cases
def test_tar_at_far_by_hand():
    imp = np.array([0.6, 0.9, 0.5, 0.8, 0.7])
    gen = np.array([0.95, 0.85, 0.75])
    ones = np.ones
    # FAR 0.2 of 5 impostors: at most 1 may pass -> t = 0.8 (only 0.9 above) -> 0.95, 0.85 accepted
    assert weighted_tar_at_far(gen, ones(3), imp, ones(5), 0.2) == pytest.approx(2 / 3)
    # FAR 0.1: none may pass: 5 impostors cannot resolve it (10 needed) -> no TAR
    assert math.isnan(weighted_tar_at_far(gen, ones(3), imp, ones(5), 0.1))
    # weight 2 on the 0.9 impostor (6 in all): floor(0.2 * 6) = 1 < 2, the top tie weighs 2 -> not resolvable
    assert math.isnan(weighted_tar_at_far(gen, ones(3), imp, np.array([1, 2, 1, 1, 1.0]), 0.2))
    # FAR 0.4 of 6: floor(2.4) = 2 may pass -> the tie (weight 2) passes, t = 0.8 -> 0.95, 0.85 accepted
    assert weighted_tar_at_far(gen, ones(3), imp, np.array([1, 2, 1, 1, 1.0]), 0.4) == pytest.approx(2 / 3)
    # a genuine weight of 0 removes it
    assert weighted_tar_at_far(gen, np.array([0, 1, 1.0]), imp, ones(5), 0.2) == pytest.approx(1 / 2)
    desc = np.sort(imp)[::-1]
    # FAR 0.4 of 5: 2 may pass -> t = 0.7; a kept top part must reach past the threshold to tell
    assert threshold_at_far(desc, ones(5), 0.4) == 0.7
    assert threshold_at_far(desc[:3], ones(3), 0.4, total=5) is None
    assert threshold_at_far(desc[:4], ones(4), 0.4, total=5) == 0.7


def test_auc_and_ranks_by_hand():
    # genuine {0.8, 0.5}, impostors {0.5, 0.2}: pairs (0.8>0.5, 0.8>0.2, 0.5=0.5 -> 1/2, 0.5>0.2) -> 3.5/4
    assert weighted_auc(np.array([0.8, 0.5]), np.ones(2), np.array([0.5, 0.2]), np.ones(2)) == pytest.approx(0.875)
    np.testing.assert_allclose(average_ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1, 3.5, 2])
    assert spearman(np.array([1.0, 2, 3]), np.array([3.0, 2, 1])) == pytest.approx(-1.0)


def test_weighted_functions_match_the_naive_ones_on_random_data():
    rng = np.random.default_rng(0)
    for _ in range(20):
        gen, imp = np.round(rng.random(12), 1), np.round(rng.random(30), 1)  # rounding makes ties
        gw, iw = rng.integers(0, 4, 12).astype(float), rng.integers(0, 4, 30).astype(float)
        gw[0] = iw[0] = 1
        g_rep, i_rep = np.repeat(gen, gw.astype(int)).tolist(), np.repeat(imp, iw.astype(int)).tolist()
        for far in (0.01, 0.1, 0.3):
            assert weighted_tar_at_far(gen, gw, imp, iw, far) == pytest.approx(naive_tar(g_rep, i_rep, far),
                                                                               nan_ok=True)
        assert weighted_auc(gen, gw, imp, iw) == pytest.approx(naive_auc(g_rep, i_rep))


# ----------------------------------------------------------------------------- the whole score set
@pytest.fixture(scope="module")
def features(small_evalset):
    ev = small_evalset
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(3 * ev.num_families, 16))
    f = centres[ev.identity] + 0.9 * rng.normal(size=(len(ev), 16))
    f *= (1.0 + ev.quality)[:, None]  # norms that follow quality, rho > 0
    return np.round(f, 2).astype(np.float32)


def test_score_set_equals_the_naive_metrics(small_evalset, features):
    ev = small_evalset
    idx = PairIndex.build(ev)
    full = ScoreSet.from_features(features, ev, idx, min_tail=10 ** 9)
    tail = ScoreSet.from_features(features, ev, idx, tail_fraction=1e-6, min_tail=1)  # always falls back
    assert not tail.splits["overall"].complete and full.splits["overall"].complete
    weights = [np.ones(ev.num_families)] + list(family_weights(ev.num_families, 4, seed=2))
    for w in weights:
        expect = naive_metrics(features.astype(np.float64), ev, w)
        for got in (full.metrics(w), tail.metrics(w)):
            assert got.keys() == expect.keys()
            for k in expect:
                assert got[k] == pytest.approx(expect[k], abs=1e-9, nan_ok=True), (k, w)
    assert full.metrics()["rho_norm_quality"] > 0.3


def test_tail_thresholds_agree_with_every_pair_at_scale(small_evalset, features):
    ev = small_evalset
    idx = PairIndex.build(ev)
    full = ScoreSet.from_features(features, ev, idx, min_tail=10 ** 9)
    kept = ScoreSet.from_features(features, ev, idx, tail_fraction=0.05, min_tail=1)
    assert not kept.splits["all_hq"].complete
    for w in family_weights(ev.num_families, 30, seed=4):
        a, b = full.metrics(w), kept.metrics(w)
        for k in ("all_hq_tar@1e-3", "overall_tar@1e-3"):
            assert a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])), k


def test_bad_weights_and_features_raise(small_evalset, features):
    idx = PairIndex.build(small_evalset)
    s = ScoreSet.from_features(features, small_evalset, idx)
    with pytest.raises(ValueError, match="family weights"):
        s.metrics(np.full(small_evalset.num_families, 0.5))
    with pytest.raises(ValueError, match="features must be"):
        ScoreSet.from_features(features[:5], small_evalset, idx)
