"""Results that accumulate: a rerun with a new head adds rows without retraining, ``--report`` rebuilds
without training, the positive control and the minimal detectable effect are reported."""
from __future__ import annotations

import glob
import json
import math
import os

import numpy as np
import pytest

from lh2face_plugin.cli import main

TINY = ["--steps", "2", "--batch-size", "8", "--identities", "6", "--images-per-id", "4", "--families", "2",
        "--bootstrap", "40", "--workers", "0", "--quiet", "--seeds", "0", "1"]


def _results(out):
    with open(os.path.join(out, "results.json")) as fh:
        return json.load(fh)


def _trained(text):
    return sorted(line.split(":")[0].strip() for line in text.splitlines() if "trained in" in line)


@pytest.mark.slow
def test_a_new_head_adds_a_row_the_report_rebuilds_and_the_control_and_mde_are_reported(tmp_path, capsys):
    out = str(tmp_path / "bench")
    assert main(["bench", "--out", out, "--heads", "arcface"] + TINY) == 0
    assert _trained(capsys.readouterr().out) == ["arcface seed0", "arcface seed1"]
    first = _results(out)
    assert list(first["heads"]) == ["arcface"] and first["reference"] == "arcface"
    stamps = {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(out, "arcface", "seed*", "model.pt"))}
    assert len(stamps) == 2

    assert main(["bench", "--out", out, "--heads", "cos24=cosface:s=24,m=0.35", "--control"] + TINY) == 0
    text = capsys.readouterr().out
    assert _trained(text) == ["control seed0", "control seed1", "cos24 seed0", "cos24 seed1"]
    assert {p: os.stat(p).st_mtime_ns for p in stamps} == stamps  # arcface neither retrained nor rewritten
    res = _results(out)
    assert list(res["heads"]) == ["arcface", "cos24", "control"]
    assert res["reference"] == "arcface" and res["control"] == "control"
    assert [(r["label"], r["seed"]) for r in res["runs"]] == [(h, s) for h in ("arcface", "cos24", "control")
                                                              for s in (0, 1)]
    old = {(r["label"], r["seed"]): r for r in first["runs"]}
    for r in res["runs"][:2]:  # the stored arcface results, under the same keys, with the same metrics
        assert r["key"] == old[(r["label"], r["seed"])]["key"] and r["reused"] is None
        assert r["metrics"] == old[(r["label"], r["seed"])]["metrics"]
    with open(os.path.join(out, "runs.json")) as fh:
        assert set(json.load(fh)["runs"]) == {r["key"] for r in res["runs"]}
    assert res["heads"]["control"]["head_kwargs"] == {"s": 24, "m": 0}

    # the control and the minimal detectable effect, computed from the achieved intervals and spreads
    assert "positive control: control (control=cosface:s=24,m=0)" in text
    for m in ("hard_hq_tar@1e-2", "hard_hq_tar@1e-1"):
        assert f"minimal detectable effect, {m}: a win needed > " in text
        per = [max(d[m]["diff"] - d[m]["ci"][0], d[m]["seed_spread"]) for d in res["differences"].values()]
        assert res["mde"][m]["comparisons"] == 2
        assert res["mde"][m]["value"] == pytest.approx(float(np.median(per)))
        for lab, d in res["differences"].items():
            assert d[m]["mde"] == pytest.approx(max(d[m]["diff"] - d[m]["ci"][0], d[m]["seed_spread"]))
        assert f"{100 * res['mde'][m]['value']:.1f} points" in text
        control = res["differences"]["control"][m]
        assert f"  {m}: {100 * control['diff']:+.1f} points" in text

    for png in res["plots"].values():
        os.remove(png)
    assert main(["bench", "--report", out, "--quiet"]) == 0
    rebuilt = capsys.readouterr().out
    assert "no training" in rebuilt and "trained in" not in rebuilt and "reused" not in rebuilt
    again = _results(out)
    assert again["differences"] == res["differences"] and again["mde"] == res["mde"]
    assert list(again["heads"]) == list(res["heads"])
    for png in again["plots"].values():
        with open(png, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"

    # other training settings: a table of its own; the stored runs stay in runs.json
    assert main(["bench", "--out", out, "--heads", "arcface", "--steps", "3"] + TINY[2:]) == 0
    text = capsys.readouterr().out
    assert _trained(text) == ["arcface seed0", "arcface seed1"]
    other = _results(out)
    assert list(other["heads"]) == ["arcface"] and any("other settings" in n for n in other["notes"])
    with open(os.path.join(out, "runs.json")) as fh:
        assert len(json.load(fh)["runs"]) == 8
    assert math.isfinite(other["heads"]["arcface"]["metrics"]["hard_hq_tar@1e-1"]["mean"])


def test_report_and_reference_errors(tmp_path, capsys):
    assert main(["bench", "--report", str(tmp_path / "nothing")]) != 0
    assert "no runs.json of lh2face bench" in capsys.readouterr().err
    assert main(["bench", "--report", str(tmp_path), "--heads", "arcface"]) != 0
    assert "trains nothing" in capsys.readouterr().err
    assert main(["bench", "--out", str(tmp_path / "x"), "--heads", "arcface", "--reference", "nope"] + TINY) != 0
    assert "reference 'nope' is not one of the heads" in capsys.readouterr().err
