"""The quickstart main job end to end on a tiny configuration, and its rerun reusing everything."""
from __future__ import annotations

import json
import os

import pytest

from lh2face_plugin.quickstart import QuickstartConfig, run_quickstart


@pytest.mark.slow
def test_quickstart_tiny_end_to_end_and_rerun(tmp_path):
    cfg = QuickstartConfig(out=str(tmp_path / "qs"), identities=12, images_per_id=4, steps=4, batch_size=16,
                           workers=0)
    lines = []
    summary = run_quickstart(cfg, progress=False, echo=lines.append)
    text = "\n".join(lines)
    assert "verify.bin accuracy" in text and "lh2face" in text and "arcface" in text
    for head in ("lh2face", "arcface"):
        h = summary["heads"][head]
        assert 0.0 <= h["verify"]["accuracy"] <= 1.0
        assert set(h["ijb"]["tar_at_far"]) >= {1e-3, 1e-2, 1e-1}
        assert os.path.exists(h["model"])
    export = summary["export"]
    assert min(export["parity"]["cosine"].values()) >= 0.9999
    assert set(export["insightface"]["routed"].values()) == {"ArcFaceONNX"}
    assert min(export["insightface"]["cosine"].values()) >= 0.9999
    assert os.path.exists(os.path.join(export["pack"], "manifest.json"))
    for path in summary["plots"].values():
        with open(path, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(cfg.out, "results.json")) as fh:
        assert json.load(fh)["heads"]["lh2face"]["verify"]["accuracy"] == pytest.approx(
            summary["heads"]["lh2face"]["verify"]["accuracy"])

    again = []
    run_quickstart(cfg, progress=False, echo=again.append)
    assert sum("reused" in line for line in again) == 2  # both models reused, not retrained


def test_quickstart_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="heads: unknown head 'lh2fcae'"):
        QuickstartConfig(out=str(tmp_path), heads=("lh2fcae",)).validate()
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        QuickstartConfig(out=str(tmp_path), steps=0).validate()
    with pytest.raises(ValueError, match="network must be one of"):
        QuickstartConfig(out=str(tmp_path), network="r50").validate()
