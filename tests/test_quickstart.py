"""The quickstart is the bench's one comparison at its preset plus verify.bin, IJB-SYNTH and the export: end to end
on a tiny configuration, its rerun reusing everything, and ``lh2face bench --report`` reading its results.json."""
from __future__ import annotations

import json
import os

import pytest

from lh2face_plugin.bench.config import BenchConfig
from lh2face_plugin.bench.results import RESULTS_FORMAT, RESULTS_VERSION
from lh2face_plugin.cli import build_parser, main
from lh2face_plugin.cli import quickstart as quickstart_cli
from lh2face_plugin.quickstart import DEFAULT_QUICKSTART_HEADS, quickstart_config, run_quickstart


def _results(out):
    with open(os.path.join(out, "results.json")) as fh:
        return json.load(fh)


@pytest.mark.slow
def test_quickstart_tiny_end_to_end_rerun_and_report(tmp_path, capsys):
    cfg = quickstart_config(out=str(tmp_path / "qs"), identities=12, images_per_id=4, steps=4, batch_size=16,
                            families=2, bootstrap=50, workers=0)
    lines = []
    comparison = run_quickstart(cfg, progress=False, echo=lines.append)
    text = "\n".join(lines)
    labels = ("lh2face", "arcface", "cosface-s24")
    assert "verify.bin accuracy" in text and all(h in text for h in labels)
    # the hard-HQ numbers name their split and its size: 2 families, 6 identities x C(6, 2) genuine pairs
    assert "hard-HQ pairs: 90 genuine / 216 look-alike impostors" in text and "differences vs lh2face" in text
    assert "one training seed per head" in text
    saved = _results(cfg.out)
    assert (saved["format"], saved["version"], saved["reference"]) == (RESULTS_FORMAT, RESULTS_VERSION, "lh2face")
    assert saved["evalset"]["pairs"]["hard_hq"] == {"genuine": 90, "impostor": 216}
    assert saved["heads"]["cosface-s24"]["head_kwargs"] == {"s": 24, "m": 0.35}
    assert [r["label"] for r in saved["runs"]] == list(labels)
    for run in saved["runs"]:
        ev, head = run["evaluations"], saved["heads"][run["label"]]
        assert 0.0 <= ev["verify_accuracy"] <= 1.0 and {"ijb_tar@1e-3", "ijb_tar@1e-2", "ijb_tar@1e-1"} <= set(ev)
        assert head["evaluations"] == ev  # one seed: the head's mean is its run's
        hh = head["metrics"]["hard_hq_tar@1e-1"]
        assert hh["ci"][0] <= hh["mean"] <= hh["ci"][1]
        assert comparison.heads[run["label"]].metrics["hard_hq_tar@1e-1"].mean == pytest.approx(hh["mean"])
        assert run["clip"]["mode"] == "scaled" and os.path.exists(os.path.join(cfg.out, run["model"]))
    export = saved["export"]
    assert export["run"] == "lh2face seed0" and min(export["parity"]["cosine"].values()) >= 0.9999
    assert set(export["insightface"]["routed"].values()) == {"ArcFaceONNX"}
    assert min(export["insightface"]["cosine"].values()) >= 0.9999
    assert os.path.exists(os.path.join(export["pack"], "manifest.json"))
    assert set(saved["plots"]) == {"roc_hard_hq", "training", "forest", "roc_ijb_synth"}
    for path in saved["plots"].values():
        with open(path, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    # the training runs come from the shared training module, in the bench's layout
    with open(os.path.join(cfg.out, "arcface", "seed0", "train.json")) as fh:
        assert json.load(fh)["format"] == "lh2face-train"

    again = []
    run_quickstart(cfg, progress=False, echo=again.append)
    assert sum("reused" in line for line in again) == 3  # every model reused, not retrained
    second = _results(cfg.out)
    assert second["differences"] == saved["differences"]

    # lh2face bench --report reads the quickstart's results.json: same comparison, evaluations and export kept
    capsys.readouterr()
    assert main(["bench", "--report", cfg.out, "--quiet"]) == 0
    assert "verify.bin accuracy" in capsys.readouterr().out
    rebuilt = _results(cfg.out)
    assert rebuilt["differences"] == saved["differences"] and rebuilt["export"] == second["export"]
    assert rebuilt["plots"]["roc_ijb_synth"] == saved["plots"]["roc_ijb_synth"]  # kept: --report cannot redraw it
    assert [r["evaluations"] for r in rebuilt["runs"]] == [r["evaluations"] for r in saved["runs"]]


def test_quickstart_rejects_bad_settings(tmp_path):
    with pytest.raises(KeyError, match="unknown head 'lh2fcae'"):
        quickstart_config(out=str(tmp_path), heads=("lh2fcae",)).validate()
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        quickstart_config(out=str(tmp_path), steps=0).validate()
    with pytest.raises(ValueError, match="network must be one of"):
        quickstart_config(out=str(tmp_path), network="r50").validate()
    with pytest.raises(ValueError, match="seeds must differ"):
        quickstart_config(out=str(tmp_path), data_seed=1, eval_seed=1).validate()
    specs, _ = quickstart_config(out=str(tmp_path)).validate()
    assert [s.label for s in specs] == ["lh2face", "arcface", "cosface-s24"]
    assert DEFAULT_QUICKSTART_HEADS[0] == "lh2face"
    with pytest.raises(ValueError, match="verification must be True for the quickstart"):
        run_quickstart(BenchConfig(out=str(tmp_path / "plain")))
    assert not (tmp_path / "plain").exists()


def test_the_quickstart_is_a_preset_of_the_bench_and_its_flags_give_it():
    cfg = quickstart_config(steps=37, seeds=(3,), data_seed=4, eval_seed=5, families=9, heads=("arcface", "cosface"))
    assert (cfg.seeds, cfg.data_seed, cfg.eval_seed, cfg.families, cfg.reference) == ((3,), 4, 5, 9, "arcface")
    assert cfg.heads == ("arcface", "cosface") and cfg.total_steps == 37
    assert cfg.verification and cfg.data_kwargs() == {} and BenchConfig().data_kwargs()["render_eval"] == 0
    assert quickstart_cli.config(build_parser().parse_args(["quickstart"])) == quickstart_config()
    flags = ["quickstart", "--train-seed", "3", "--seed", "4", "--eval-families", "9", "--steps", "37"]
    assert quickstart_cli.config(build_parser().parse_args(flags)) == quickstart_config(seeds=(3,), data_seed=4,
                                                                                        families=9, steps=37)
