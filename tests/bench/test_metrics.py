"""Typed metric values keep the JSON shape of results.json."""
from __future__ import annotations

import json
import math

import numpy as np

from lh2face_plugin.bench.bootstrap import compare_heads, summarize_heads
from lh2face_plugin.bench.metrics import Difference, Estimate, Interval
from lh2face_plugin.bench.results import to_json


def test_estimate_and_difference_round_trip_through_their_json_objects():
    rng = np.random.default_rng(0)
    point = {"ref": [0.3, 0.32], "h": [0.35, 0.36]}
    reps = {k: [rng.normal(v, 0.01, 50) for v in vs] for k, vs in point.items()}
    e = summarize_heads(point, reps)["h"]
    d = compare_heads(point, reps, "ref")["h"]
    assert list(e.to_dict()) == ["mean", "ci", "half_width", "seed_values", "seed_sd", "seed_range"]
    assert list(d.to_dict()) == ["diff", "ci", "half_width", "seed_spread", "verdict", "ci_contains_diff", "mde"]
    assert "mde" not in d.to_dict(mde=False) and isinstance(e.to_dict()["ci"], list)
    for obj, cls in ((e, Estimate), (d, Difference)):
        stored = json.loads(json.dumps(to_json(obj.to_dict())))
        back = cls.from_dict(stored)
        assert back.ci == obj.ci and isinstance(back.ci, Interval)
        assert json.dumps(to_json(back.to_dict())) == json.dumps(to_json(obj.to_dict()))
    nan = Estimate.from_dict({"mean": None, "ci": [None, None], "half_width": None, "seed_values": [0.5],
                              "seed_sd": None, "seed_range": None})
    assert math.isnan(nan.ci.lo) and math.isnan(nan.ci.half_width)
