"""The quickstart main job end to end on a tiny configuration, and its rerun reusing everything."""
from __future__ import annotations

import json
import os

import pytest

from lh2face_plugin.quickstart import DEFAULT_QUICKSTART_HEADS, QuickstartConfig, run_quickstart


@pytest.mark.slow
def test_quickstart_tiny_end_to_end_and_rerun(tmp_path):
    cfg = QuickstartConfig(out=str(tmp_path / "qs"), identities=12, images_per_id=4, steps=4, batch_size=16,
                           eval_families=2, bootstrap=50, workers=0)
    lines = []
    summary = run_quickstart(cfg, progress=False, echo=lines.append)
    text = "\n".join(lines)
    labels = ("lh2face", "arcface", "cosface-s24")
    assert "verify.bin accuracy" in text and all(h in text for h in labels)
    # the hard-HQ numbers name their split and its size: 2 families, 6 identities x C(6, 2) genuine pairs
    assert "90 genuine / 216 look-alike impostor pairs" in text and "hard HQ TAR@FAR=1e-1 [95% CI]" in text
    assert "lh2face - cosface-s24, hard HQ TAR@FAR=1e-1" in text
    assert summary["hard_hq_set"]["genuine_pairs"] == 90 and summary["hard_hq_set"]["impostor_pairs"] == 216
    assert summary["heads"]["cosface-s24"]["head_kwargs"] == {"s": 24, "m": 0.35}
    for head in labels:
        h = summary["heads"][head]
        assert 0.0 <= h["verify"]["accuracy"] <= 1.0
        assert set(h["ijb"]["tar_at_far"]) >= {1e-3, 1e-2, 1e-1}
        hh = h["hard_hq"]["hard_hq_tar@1e-1"]
        assert hh["ci"][0] <= hh["mean"] <= hh["ci"][1]
        assert h["clip"]["mode"] == "scaled" and os.path.exists(h["model"])
    export = summary["export"]
    assert min(export["parity"]["cosine"].values()) >= 0.9999
    assert set(export["insightface"]["routed"].values()) == {"ArcFaceONNX"}
    assert min(export["insightface"]["cosine"].values()) >= 0.9999
    assert os.path.exists(os.path.join(export["pack"], "manifest.json"))
    for path in summary["plots"].values():
        with open(path, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(cfg.out, "results.json")) as fh:
        saved = json.load(fh)
    assert saved["heads"]["lh2face"]["verify"]["accuracy"] == pytest.approx(
        summary["heads"]["lh2face"]["verify"]["accuracy"])
    assert saved["heads"]["arcface"]["hard_hq"]["hard_hq_tar@1e-1"]["mean"] == pytest.approx(
        summary["heads"]["arcface"]["hard_hq"]["hard_hq_tar@1e-1"]["mean"])
    # the training runs come from the shared training module
    with open(os.path.join(cfg.out, "arcface", "train.json")) as fh:
        assert json.load(fh)["format"] == "lh2face-train"

    again = []
    run_quickstart(cfg, progress=False, echo=again.append)
    assert sum("reused" in line for line in again) == 3  # every model reused, not retrained


def test_quickstart_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="heads: unknown head 'lh2fcae'"):
        QuickstartConfig(out=str(tmp_path), heads=("lh2fcae",)).validate()
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        QuickstartConfig(out=str(tmp_path), steps=0).validate()
    with pytest.raises(ValueError, match="network must be one of"):
        QuickstartConfig(out=str(tmp_path), network="r50").validate()
    with pytest.raises(ValueError, match="eval_seed must differ"):
        QuickstartConfig(out=str(tmp_path), seed=1, eval_seed=1).validate()
    assert [s.label for s in QuickstartConfig(out=str(tmp_path)).validate()] == ["lh2face", "arcface", "cosface-s24"]
    assert DEFAULT_QUICKSTART_HEADS[0] == "lh2face"


def test_the_quickstart_is_a_bench_of_one_seed():
    cfg = QuickstartConfig(steps=37, train_seed=3, seed=4, eval_seed=5, eval_families=9, heads=("arcface", "cosface"))
    bench = cfg.bench()
    assert (bench.seeds, bench.data_seed, bench.eval_seed, bench.families) == ((3,), 4, 5, 9)
    assert bench.heads == ("arcface", "cosface") and bench.total_steps == 37
    assert cfg.train_config(0.2, 3) == bench.train_config(0.2, 3)
    assert bench.validate()[0] == cfg.validate()
