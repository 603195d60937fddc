"""bench/bootstrap.py at the edges mutation testing (``tox -e mutation -- bootstrap``) found unchecked.

One replicate or one family, a single training seed, a confidence level other than the default, the
interval's half width, an interval with one unknown bound, the progress bar's defaults, and the resample
stream itself (golden: benchmarks reproduce only if it never changes).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from lh2face_plugin.bench.bootstrap import (bootstrap_metrics, compare_heads, family_weights, percentile_ci,
                                            summarize_heads, verdict)


def test_family_weights_stream_is_fixed_and_seed_0_is_the_default():
    assert family_weights(4, 3).tolist() == [[0, 0, 1, 3], [0, 3, 0, 1], [1, 1, 0, 2]]  # golden
    assert np.array_equal(family_weights(4, 3), family_weights(4, 3, seed=0))
    assert not np.array_equal(family_weights(4, 3, seed=0), family_weights(4, 3, seed=1))


def test_family_weights_bounds():
    assert family_weights(1, 1).tolist() == [[1]]  # one replicate of one family
    assert family_weights(3, 1).sum() == 3 and family_weights(1, 4).tolist() == [[1]] * 4
    for families, replicates in ((0, 2), (2, 0)):
        with pytest.raises(ValueError, match=rf"^need replicates >= 1 and families >= 1, got {replicates}, "
                                             rf"{families}$"):
            family_weights(families, replicates)


class Counting:
    """A model whose metric is the weighted number of families drawn from the first half."""

    def __init__(self, offset):
        self.offset = offset

    def metrics(self, w):
        w = np.ones(4) if w is None else w
        return {"m": float(w[:2].sum()) + self.offset}


def test_bootstrap_metrics_defaults_and_progress_bar(capsys):
    point, reps = bootstrap_metrics([Counting(0.0), Counting(1.0)], 4, 3)
    assert capsys.readouterr().err == ""  # no bar unless asked
    assert point == [{"m": 2.0}, {"m": 3.0}]
    expected = family_weights(4, 3, seed=0)[:, :2].sum(1)
    assert np.array_equal(reps[0]["m"], expected) and np.array_equal(reps[1]["m"], expected + 1)
    bootstrap_metrics([Counting(0.0), Counting(1.0)], 4, 3, progress=True)
    err = capsys.readouterr().err
    assert "bootstrap:" in err and "/6 " in err and "rep/s" in err  # default label, models x replicates, unit


def test_summary_with_one_seed_and_a_level():
    rng = np.random.default_rng(0)
    reps = {"a": [rng.normal(0.5, 0.1, 400)], "b": [rng.normal(0.4, 0.1, 400), rng.normal(0.45, 0.1, 400)]}
    point = {"a": [0.5], "b": [0.4, 0.46]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a standard deviation of one value would warn
        out = summarize_heads(point, reps, level=0.5)
    assert math.isnan(out["a"].seed_sd) and math.isnan(out["a"].seed_range)
    assert out["a"].seed_values == [0.5] and out["b"].seed_range == pytest.approx(0.06)
    assert out["a"].ci == percentile_ci(reps["a"][0], 0.5)
    assert out["a"].ci != percentile_ci(reps["a"][0])
    for head in out:
        lo, hi = out[head].ci
        assert out[head].half_width == pytest.approx((hi - lo) / 2.0)


def test_comparison_with_a_single_seed_head_and_a_level():
    rng = np.random.default_rng(1)
    reps = {"ref": [rng.normal(0.4, 0.01, 400), rng.normal(0.41, 0.01, 400)], "one": [rng.normal(0.6, 0.01, 400)],
            "two": [rng.normal(0.6, 0.01, 400), rng.normal(0.62, 0.01, 400)]}
    point = {"ref": [0.4, 0.41], "one": [0.6], "two": [0.6, 0.62]}
    out = compare_heads(point, reps, "ref", level=0.5)
    assert math.isnan(out["one"].seed_spread) and out["one"].verdict == "needs >= 2 seeds"
    assert out["two"].seed_spread == pytest.approx(0.02) and out["two"].verdict == "win"
    pooled_ref = (reps["ref"][0] + reps["ref"][1]) / 2
    assert out["one"].ci == percentile_ci(reps["one"][0] - pooled_ref, 0.5)
    for head in ("one", "two"):
        lo, hi = out[head].ci
        assert out[head].half_width == pytest.approx((hi - lo) / 2.0)
    single_ref = compare_heads({"ref": [0.4], "two": [0.6, 0.62]}, {"ref": reps["one"], "two": reps["two"]}, "ref")
    assert math.isnan(single_ref["two"].seed_spread)


def test_verdict_with_one_unknown_bound_is_undefined():
    assert verdict(0.1, [math.nan, 0.2], 0.01) == "undefined"
    assert verdict(0.1, [0.05, math.nan], 0.01) == "undefined"
