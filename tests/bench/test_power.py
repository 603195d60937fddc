"""The minimal detectable effect: the formula against a naive search with the win rule itself."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lh2face_plugin.bench.bootstrap import compare_heads, percentile_ci, verdict
from lh2face_plugin.bench.metrics import Difference, Interval
from lh2face_plugin.bench.power import detectable_effect, minimal_detectable_effect


def _d(diff, ci, seed_spread):
    return Difference(diff, Interval.of(ci), math.nan, seed_spread, "", True)


def _naive_mde(head_reps, ref_reps, diff, spread, step=1e-4):
    """Smallest d on a grid that the win rule calls a win, had the replicate differences been shifted to d."""
    delta = np.mean(np.stack(head_reps), 0) - np.mean(np.stack(ref_reps), 0)
    for d in np.arange(0.0, 0.5, step):
        if verdict(d, percentile_ci(delta - diff + d), spread) == "win":
            return d
    return math.nan


@pytest.mark.parametrize("seed,shift,noise", [(0, 0.01, 0.02), (1, -0.03, 0.01), (2, 0.0, 0.05)])
def test_mde_is_the_smallest_difference_the_win_rule_calls_a_win(seed, shift, noise):
    rng = np.random.default_rng(seed)
    base = rng.normal(0.3, noise, 400)
    point = {"ref": [0.30, 0.31], "h": [0.30 + shift, 0.32 + shift]}
    reps = {"ref": [base + rng.normal(0, 0.005, 400) for _ in range(2)],
            "h": [base + shift + rng.normal(0, noise, 400) for _ in range(2)]}
    d = compare_heads(point, reps, "ref")["h"]
    mde = minimal_detectable_effect(d.diff, d.ci, d.seed_spread)
    assert mde == pytest.approx(max(d.diff - d.ci.lo, d.seed_spread))
    assert mde == pytest.approx(_naive_mde(reps["h"], reps["ref"], d.diff, d.seed_spread), abs=2e-4)


def test_mde_summary_is_the_median_over_comparisons_and_unknown_without_spread():
    diffs = {"a": {"m": _d(0.02, [0.0, 0.04], 0.01)},
             "b": {"m": _d(-0.01, [-0.04, 0.02], 0.05)},
             "c": {"m": _d(0.0, [-0.01, 0.01], 0.001)},
             "single": {"m": _d(0.0, [-0.01, 0.01], math.nan)}}
    s = detectable_effect(diffs, "m")
    assert s.per_head["a"] == pytest.approx(0.02) and s.per_head["b"] == pytest.approx(0.05)
    assert s.per_head["c"] == pytest.approx(0.01) and math.isnan(s.per_head["single"])
    assert s.comparisons == 3 and s.value == pytest.approx(0.02)
    assert s.ci_lower_half == pytest.approx(0.02) and s.seed_spread == pytest.approx(0.01)


@pytest.mark.parametrize("missing", ["diff", "lo", "seed_spread"])
def test_mde_is_unknown_when_any_one_part_is_missing(missing):
    parts = {"diff": 0.02, "lo": 0.0, "seed_spread": 0.01}
    parts[missing] = None
    assert math.isnan(minimal_detectable_effect(parts["diff"], [parts["lo"], 0.04], parts["seed_spread"]))


def test_mde_summary_of_no_known_comparison_is_nan_without_numpy_warnings():
    import warnings

    diffs = {"single": {"m": _d(0.0, [-0.01, 0.01], math.nan)},
             "no-ci": {"m": _d(0.01, [None, None], 0.02)}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a median of an empty list would warn "Mean of empty slice"
        s = detectable_effect(diffs, "m")
    assert s.comparisons == 0 and set(s.per_head) == {"single", "no-ci"}
    assert all(math.isnan(getattr(s, k)) for k in ("value", "ci_lower_half", "seed_spread"))
