"""FAR and FPIR thresholds where FAR x count is not a whole number (lh2face_plugin/eval/metrics.py).

The references never round: the threshold is the lowest impostor score t whose accepted impostors
(scores > t, weights counted) are at most FAR x W, compared as real numbers. With 2347 impostors the
products 2.347, 23.47, 234.7 and 586.75 tell floor from round and ceil (and round-half from the others).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from lh2face_plugin.eval import metrics

FARS = (1e-3, 1e-2, 1e-1, 0.25)
N_IMP = 2347


def loop_threshold(imp, far, weights=None):
    """The lowest impostor score t with W(imp > t) <= far * W (NaN when no impostor is accepted there)."""
    weights = [1.0] * len(imp) if weights is None else list(weights)
    total = sum(weights)
    best = math.nan
    for t in sorted(set(imp), reverse=True):
        accepted = sum(w for s, w in zip(imp, weights) if s > t)
        if accepted <= far * total:
            best = t
        else:
            break
    accepted = sum(w for s, w in zip(imp, weights) if s > best) if not math.isnan(best) else 0.0
    return (best, accepted / total) if accepted > 0 else (math.nan, math.nan)


@pytest.fixture
def problem():
    rng = np.random.default_rng(11)
    gen = rng.normal(2.0, 1.0, 400)
    imp = rng.normal(0.0, 1.0, N_IMP)
    imp[:40] = np.round(imp[:40], 1)  # a few ties
    labels = np.r_[np.ones(gen.size), np.zeros(imp.size)].astype(int)
    return labels, np.r_[gen, imp], gen, imp


def test_the_products_are_not_whole_numbers():
    products = [far * N_IMP for far in FARS]
    assert all(p != math.floor(p) for p in products)
    assert {math.floor(p) for p in products}.isdisjoint({math.ceil(p) for p in products})
    assert any(round(p) != math.floor(p) for p in products)


def test_tar_at_far_with_fractional_products_equals_the_loop(problem):
    labels, scores, gen, imp = problem
    res = metrics.tar_at_far(labels, scores, FARS)
    for far in FARS:
        t, far_measured = loop_threshold(imp.tolist(), far)
        assert res["far_measured"][far] == pytest.approx(far_measured, abs=0), far
        assert res["far_measured"][far] <= far
        assert res["tar_at_far"][far] == np.mean(gen > t), far


def test_weighted_far_thresholds_with_fractional_products_equal_the_loop(problem):
    _, _, _, imp = problem
    rng = np.random.default_rng(5)
    weights = rng.integers(0, 4, imp.size).astype(float)  # bootstrap multiplicities, zeros included
    order = np.argsort(-imp, kind="stable")
    desc, w = imp[order], weights[order]
    total = w.sum()
    assert all(far * total != math.floor(far * total) for far in FARS)
    points = metrics.far_thresholds(desc, FARS, weights=w)
    for far, point in zip(FARS, points):
        t, far_measured = loop_threshold(desc.tolist(), far, w.tolist())
        assert point.reason is None and point.threshold == t, far
        assert point.far_measured == pytest.approx(far_measured, abs=1e-15), far


def test_identification_threshold_with_fractional_products():
    rng = np.random.default_rng(8)
    gsub = np.arange(30)
    psub = np.r_[np.arange(30), 100 + np.arange(217)]  # 217 non-mated probes: 2.17, 21.7, 54.25, 108.5
    scores = rng.normal(0, 1, (psub.size, gsub.size)) + 2.5 * (psub[:, None] == gsub[None])
    fpirs = (0.01, 0.1, 0.25, 0.5)
    res = metrics.identification(scores, psub, gsub, fpirs=fpirs, ranks=(1,))
    top = scores.max(axis=1)
    non_mated = top[30:].tolist()
    for f in fpirs:
        tau = res["threshold"][f]
        accepted = sum(s > tau for s in non_mated)
        assert accepted <= f * len(non_mated), f  # at most FPIR x N non-mated probes pass
        # and tau is the lowest non-mated score that does so
        lower = [s for s in non_mated if s < tau]
        assert not lower or sum(s > max(lower) for s in non_mated) > f * len(non_mated), f
