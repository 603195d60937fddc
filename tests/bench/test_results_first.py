"""Measured results are written first (issue 23 item 1): a plot or table that fails warns in one line
and leaves ``results.json``; error bars come from the interval's bounds; ``bench --report`` rebuilds
from ``runs.json`` alone."""
from __future__ import annotations

import json
import math
import os

import pytest

from lh2face_plugin.cli import main

TINY = ["--heads", "cosface", "arcface", "--seeds", "0", "--steps", "2", "--batch-size", "8", "--identities", "6",
        "--images-per-id", "4", "--families", "2", "--bootstrap", "20", "--workers", "0", "--quiet"]


def _comparison(diff, ci):
    from lh2face_plugin.bench.metrics import Difference, Interval
    from lh2face_plugin.bench.plots import FOREST_METRICS
    from lh2face_plugin.bench.records import Comparison

    d = Difference(diff, Interval.of(ci), (ci[1] - ci[0]) / 2, math.nan, "needs >= 2 seeds", False)
    return Comparison("ref", {}, {"other": {m: d for m in FOREST_METRICS}}, {}, {}, None, 20, 0)


@pytest.mark.parametrize("diff, ci", [(0.0, [0.007, 0.02]), (0.03, [-0.01, 0.02]), (0.0, [0.0, 0.0])])
def test_the_forest_plot_draws_an_interval_that_misses_its_estimate(tmp_path, diff, ci):
    from lh2face_plugin.bench.plots import _forest

    path = _forest(_comparison(diff, ci), str(tmp_path / "forest.png"))  # raised "'xerr' must not contain ..."
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    from lh2face_plugin.bench.plots import error_bar

    centre, half = error_bar(*ci)
    assert half >= 0 and centre - half == pytest.approx(ci[0]) and centre + half == pytest.approx(ci[1])
    assert error_bar(0.3, 0.1)[1] == 0.0 and error_bar(None, 0.1)[1] == 0.0


def test_the_report_names_an_interval_that_misses_its_estimate():
    from lh2face_plugin.bench.bootstrap import compare_heads, contains
    from lh2face_plugin.bench.report import _outside_lines

    assert not contains([0.007, 0.02], 0.0) and contains([0.0, 0.0], 0.0) and contains([math.nan, 1], 5)
    lines = _outside_lines(_comparison(0.0, [0.007, 0.02]))
    assert lines and all("does not contain the estimate" in line for line in lines)
    assert not _outside_lines(_comparison(0.01, [0.0, 0.02]))
    import numpy as np

    d = compare_heads({"r": [0.5], "h": [0.5]}, {"r": [np.zeros(40)], "h": [np.full(40, 0.1)]}, "r")["h"]
    assert d.ci_contains_diff is False


@pytest.mark.slow
def test_bench_writes_results_before_plots_and_the_report_rebuilds_from_runs_json(tmp_path, capsys, monkeypatch):
    import lh2face_plugin.bench.plots as plots

    out = str(tmp_path / "bench")

    def broken(*args, **kwargs):
        raise ValueError("'xerr' must not contain negative values\nsecond line")

    monkeypatch.setattr(plots, "plot_comparison", broken)
    assert main(["bench", "--out", out] + TINY) == 0
    text = capsys.readouterr().out
    warnings = [line for line in text.splitlines() if line.startswith("warning: plots not made")]
    assert len(warnings) == 1 and "second line" not in text and os.path.join(out, "results.json") in warnings[0]
    with open(os.path.join(out, "results.json")) as fh:
        first = json.load(fh)
    assert first["plots"] == {} and set(first["heads"]) == {"cosface", "arcface"}
    for run in first["runs"]:  # issue 23 item 11: the measured FAR beside every TAR
        tars = {m for m in run["metrics"] if "_tar@" in m}
        assert set(run["far_measured"]) == tars
        assert all(v is None or v <= float(m.split("@")[1]) for m, v in run["far_measured"].items())
    assert "differences vs cosface" in text

    monkeypatch.undo()
    os.remove(os.path.join(out, "results.json"))  # runs.json alone rebuilds everything
    assert main(["bench", "--report", out, "--quiet"]) == 0
    with open(os.path.join(out, "results.json")) as fh:
        again = json.load(fh)
    assert again["differences"] == first["differences"] and again["reference"] == "cosface"
    assert again["bootstrap"]["replicates"] == 20 and set(again["plots"]) == {"roc_hard_hq", "training", "forest"}
