"""The family bootstrap, seed pooling and the win rule against cases computed by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lh2face_plugin.bench.bootstrap import (bootstrap_metrics, compare_heads, family_weights, percentile_ci,
                                            summarize_heads, verdict)
from lh2face_plugin.bench.scores import weighted_tar_at_far


class TwoFamilies:
    """A model on 2 families; its one metric is weighted TAR at FAR=0.5 (see the module tests)."""

    def __init__(self, gen, imp):
        self.gen, self.imp = gen, imp  # per family: lists of scores

    def metrics(self, w):
        w = np.ones(2) if w is None else np.asarray(w, float)
        g = np.concatenate([np.asarray(s, float) for s in self.gen])
        gw = np.concatenate([np.full(len(s), w[f]) for f, s in enumerate(self.gen)])
        i = np.concatenate([np.asarray(s, float) for s in self.imp])
        iw = np.concatenate([np.full(len(s), w[f]) for f, s in enumerate(self.imp)])
        return {"tar": weighted_tar_at_far(g, gw, i, iw, 0.5)}


# Family 0: genuine 0.9, 0.6; impostor 0.7.  Family 1: genuine 0.8; impostors 0.5, 0.3.
# Resample (1,1): impostors {0.7, 0.5, 0.3}, floor(0.5*3)=1 may pass -> t = 0.5 -> TAR 3/3 = 1.
# Resample (2,0): impostor 0.7 twice, floor(0.5*2)=1 < the tie group 0.7 (weight 2): no impostor can pass, the
#                 FAR is not resolvable (eval.metrics.far_thresholds) -> NaN.
# Resample (0,2): impostors {0.5, 0.3} x2, total 4, floor(2)=2 -> W(>0.3) = 2 -> t = 0.3 -> TAR 1.
A = TwoFamilies([[0.9, 0.6], [0.8]], [[0.7], [0.5, 0.3]])
HAND_A = {(1, 1): 1.0, (2, 0): math.nan, (0, 2): 1.0}
# Model B, same families: family 0 genuine 0.65, 0.95, impostor 0.75; family 1 genuine 0.4, impostors 0.5, 0.2.
# (1,1): impostors {0.75, 0.5, 0.2}: t = 0.5 -> genuine {0.65, 0.95, 0.4} -> 2/3.
# (2,0): not resolvable -> NaN.   (0,2): t = 0.2 -> {0.4} -> 1.
B = TwoFamilies([[0.65, 0.95], [0.4]], [[0.75], [0.5, 0.2]])
HAND_B = {(1, 1): 2 / 3, (2, 0): math.nan, (0, 2): 1.0}


def test_metric_under_each_resample_matches_the_hand_computation():
    for w, value in HAND_A.items():
        assert A.metrics(w)["tar"] == pytest.approx(value, nan_ok=True)
    for w, value in HAND_B.items():
        assert B.metrics(w)["tar"] == pytest.approx(value, nan_ok=True)


def test_family_weights_are_multinomial_resamples():
    w = family_weights(2, 4000, seed=3)
    assert w.shape == (4000, 2) and (w.sum(1) == 2).all()
    freq = {k: np.mean([tuple(r) == k for r in w]) for k in HAND_A}
    assert freq[(1, 1)] == pytest.approx(0.5, abs=0.03)
    assert freq[(2, 0)] == pytest.approx(0.25, abs=0.03)
    assert (family_weights(2, 10, seed=3) == w[:10]).all()  # deterministic per seed


def test_bootstrap_replicates_take_the_hand_values_on_shared_resamples():
    point, reps = bootstrap_metrics([A, B], num_families=2, replicates=2000, seed=1)
    assert point[0]["tar"] == pytest.approx(1.0) and point[1]["tar"] == pytest.approx(2 / 3)
    w = family_weights(2, 2000, seed=1)
    expect_a = np.array([HAND_A[tuple(r)] for r in w])
    expect_b = np.array([HAND_B[tuple(r)] for r in w])
    np.testing.assert_allclose(reps[0]["tar"], expect_a)
    np.testing.assert_allclose(reps[1]["tar"], expect_b)
    # paired difference B - A per resample: (1,1) -> -1/3, (2,0) -> 0, (0,2) -> 0
    d = compare_heads({"A": [point[0]["tar"]], "B": [point[1]["tar"]]},
                      {"A": [reps[0]["tar"]], "B": [reps[1]["tar"]]}, reference="A")["B"]
    assert d.diff == pytest.approx(-1 / 3)
    # about half the resamples give -1/3, the rest 0: the 2.5% and 97.5% percentiles are -1/3 and 0
    assert list(d.ci) == pytest.approx([-1 / 3, 0.0])
    assert d.verdict == "no measurable difference"
    # A alone: 25% of the resamples give NaN (not resolvable, left out), the others 1 -> CI [1, 1]
    s = summarize_heads({"A": [point[0]["tar"]]}, {"A": [reps[0]["tar"]]})["A"]
    assert list(s.ci) == pytest.approx([1.0, 1.0]) and s.half_width == pytest.approx(0.0)
    assert math.isnan(s.seed_sd)


def test_percentile_interval_by_hand():
    # numpy's linear rule: position 99 * 0.025 = 2.475 -> 3 + 0.475; 99 * 0.975 = 96.525 -> 97.525
    assert percentile_ci(np.arange(1, 101)) == pytest.approx([3.475, 97.525])
    assert percentile_ci(np.array([np.nan, 1.0, 1.0])) == (1.0, 1.0)
    assert all(math.isnan(v) for v in percentile_ci(np.array([np.nan])))


def test_seeds_are_averaged_inside_each_replicate():
    point = {"ref": [0.4, 0.4], "h": [0.5, 0.7]}
    reps = {"ref": [np.array([0.3, 0.4, 0.5]), np.array([0.3, 0.4, 0.5])],
            "h": [np.array([0.4, 0.5, 0.6]), np.array([0.6, 0.7, 0.8])]}
    s = summarize_heads(point, reps)
    assert s["h"].mean == pytest.approx(0.6)
    assert list(s["h"].ci) == pytest.approx([0.5 + 0.2 * 0.025, 0.7 - 0.2 * 0.025])  # pooled reps 0.5, 0.6, 0.7
    assert s["h"].seed_range == pytest.approx(0.2) and s["h"].seed_sd == pytest.approx(0.2 / math.sqrt(2))
    d = compare_heads(point, reps, "ref")["h"]
    assert d.diff == pytest.approx(0.2) and list(d.ci) == pytest.approx([0.2, 0.2])  # differences 0.2, 0.2, 0.2
    assert d.seed_spread == pytest.approx(0.2)
    assert d.verdict == "within seed spread"  # the CI excludes 0 but 0.2 does not exceed the spread 0.2
    point["h"] = [0.55, 0.65]
    assert compare_heads(point, reps, "ref")["h"].verdict == "win"


@pytest.mark.parametrize("diff, ci, spread, expected", [
    (0.05, [0.01, 0.09], 0.02, "win"),
    (-0.05, [-0.09, -0.01], 0.02, "loss"),
    (0.05, [0.01, 0.09], 0.06, "within seed spread"),
    (0.05, [-0.01, 0.09], 0.0, "no measurable difference"),
    (0.05, [0.0, 0.09], 0.0, "no measurable difference"),
    (0.05, [0.01, 0.09], math.nan, "needs >= 2 seeds"),
    (0.05, [math.nan, math.nan], 0.0, "undefined"),
])
def test_verdict(diff, ci, spread, expected):
    assert verdict(diff, ci, spread) == expected


def test_compare_heads_rejects_an_unknown_reference():
    with pytest.raises(KeyError, match="reference 'x'"):
        compare_heads({"a": [1.0]}, {"a": [np.zeros(3)]}, "x")
