"""``lh2face bench`` end to end on a tiny budget, with a learning-rate sweep, and its rerun."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from lh2face_plugin.cli import main

TINY = ["--steps", "2", "--batch-size", "8", "--identities", "6", "--images-per-id", "4", "--families", "2",
        "--val-families", "2", "--bootstrap", "40", "--workers", "0", "--quiet"]


@pytest.mark.slow
def test_bench_tiny_end_to_end_and_rerun(tmp_path, capsys):
    out = str(tmp_path / "bench")
    args = ["bench", "--out", out, "--heads", "arcface", "cos24=cosface:s=24,m=0.35", "--reference", "cos24",
            "--seeds", "0", "1", "--lr-sweep", "0.1", "1e12"] + TINY
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "hard-HQ 90/216" in text  # 2 families: 6 identities x C(6,2) genuine, 2 x 3 x 36 impostors
    assert "achieved 95% CI half-width" in text and "differences vs cos24" in text
    with open(os.path.join(out, "results.json")) as fh:
        res = json.load(fh)
    assert res["format"] == "lh2face-bench" and res["reference"] == "cos24"
    assert res["evalset"]["pairs"]["hard_hq"] == {"genuine": 90, "impostor": 216}
    assert [(r["label"], r["seed"]) for r in res["runs"]] == [("arcface", 0), ("arcface", 1), ("cos24", 0),
                                                              ("cos24", 1)]
    from lh2face_plugin.eval.embed import load_embedder

    for r in res["runs"]:
        assert r["network"] == "compact-tiny" and r["model"] == f"{r['label']}/seed{r['seed']}/model.pt"
        assert 0.0 <= r["metrics"]["hard_hq_tar@1e-1"] <= 1.0 and 0.0 <= r["clip"]["fraction"] <= 1.0
        assert r["lr"] == res["lr_sweep"]["heads"][r["label"]]["chosen"]
    embed = load_embedder(os.path.join(out, res["runs"][0]["model"]), network=res["runs"][0]["network"])
    assert embed(np.zeros((2, 112, 112, 3), np.uint8)).shape == (2, 512)  # what lh2face eval does
    d = res["differences"]["arcface"]["hard_hq_tar@1e-1"]
    assert d["ci"][0] <= d["ci"][1] and d["verdict"] in ("win", "loss", "within seed spread",
                                                         "no measurable difference")
    h = res["heads"]["arcface"]["metrics"]["hard_hq_tar@1e-1"]
    assert h["mean"] == pytest.approx(np.mean(h["seed_values"])) and len(h["seed_values"]) == 2
    assert set(res["lr_sweep"]["heads"]) == {"arcface", "cos24"}
    for sweep in res["lr_sweep"]["heads"].values():  # lr 1e12 diverges: recorded, never chosen
        assert "non-finite" in sweep["rows"]["1e+12"]["diverged"] and sweep["chosen"] == 0.1
    for path in res["plots"].values():
        with open(path, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert set(res["plots"]) == {"roc_hard_hq", "training", "forest", "lr_sweep"}

    assert main(args) == 0
    again = capsys.readouterr().out
    assert again.count("reused") == 4 and "trained in" not in again
    assert again.count("diverged in an earlier run") == 2
    with open(os.path.join(out, "results.json")) as fh:
        res2 = json.load(fh)
    assert res2["differences"] == res["differences"]


def test_bench_cli_errors(tmp_path, capsys):
    out = tmp_path / "foreign"
    out.mkdir()
    (out / "results.json").write_text("{}")
    assert main(["bench", "--out", str(out), "--heads", "arcface"] + TINY) == 2
    assert "was not written by lh2face bench" in capsys.readouterr().err
    assert main(["bench", "--out", str(tmp_path / "x"), "--heads", "arcface:m=2,,"] + TINY) == 2
    assert "not key=value" in capsys.readouterr().err
    assert main(["bench", "--list-defaults"]) == 0
    assert "cosface-s24=cosface:s=24,m=0.35" in capsys.readouterr().out
