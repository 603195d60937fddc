"""Saved records are untrusted input (issue 23 item 6): the model is built from ``train.json`` only after
its sizes agree with ``model.pt``; every path of ``runs.json`` resolves inside OUT; the schema is checked
with one-line errors naming the file and the key."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from lh2face_plugin.cli import main

TINY = ["--heads", "arcface", "--seeds", "0", "--steps", "2", "--batch-size", "8", "--identities", "6",
        "--images-per-id", "4", "--families", "2", "--bootstrap", "20", "--workers", "0", "--quiet"]


def test_train_json_sizes_are_checked_against_model_pt_before_building(tmp_path):
    from lh2face_plugin.fileio import sha256_file, write_json
    from lh2face_plugin.training import build_model, load_trained_model

    model, _ = build_model("compact-tiny", 32, "render", {})
    path = str(tmp_path / "model.pt")
    torch.save(model.state_dict(), path)
    info = {"format": "lh2face-train", "network": "compact-tiny", "embedding_size": 32,
            "input_module": {"name": "render", "kwargs": {"width": 16}}, "model_sha256": sha256_file(path)}
    write_json(str(tmp_path / "train.json"), info)
    assert type(load_trained_model(path)).__name__ == "RenderAugmentedModel"
    # a forged width (60000 tried to allocate 259 GB): refused from the tensors' shapes, nothing allocated
    for forged in ({"input_module": {"name": "render", "kwargs": {"width": 200}}}, {"embedding_size": 64},
                   {"embedding_size": "32"}):
        write_json(str(tmp_path / "train.json"), {**info, **forged})
        with pytest.raises(ValueError, match=r"train\.json: .*(does not fit model\.pt: tensor|embedding_size)"):
            load_trained_model(path)


@pytest.fixture(scope="module")
def bench_out(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("saved") / "bench")
    assert main(["bench", "--out", out] + TINY) == 0
    return out


def _forge(src, dst, edit):
    shutil.copytree(src, dst, symlinks=True)
    with open(os.path.join(dst, "runs.json")) as fh:
        doc = json.load(fh)
    edit(doc)
    with open(os.path.join(dst, "runs.json"), "w") as fh:
        json.dump(doc, fh)
    os.remove(os.path.join(dst, "results.json"))
    return dst


def _first(doc):
    return next(iter(doc["runs"].values()))


@pytest.mark.slow
@pytest.mark.parametrize("case, edit, expect", [
    ("outside", lambda d: _first(d).update(dir="../other/arcface/seed0", model="../other/arcface/seed0/model.pt"),
     "key 'dir': names '../other/arcface/seed0', which resolves outside"),
    ("list", lambda d: d.update(runs=list(d["runs"].values())), "runs.json: key 'runs' must be an object"),
    ("strings", lambda d: _first(d)["metrics"].update({"hard_hq_tar@1e-1": "high"}),
     "runs.json: runs['"),
    ("seed", lambda d: _first(d).update(seed="0"), "key 'seed' must be int, not str"),
    ("evalset", lambda d: d["table"]["evalset"].update(path="../../etc"), "key 'evalset.path': names"),
    ("replicates", lambda d: d["table"]["bootstrap"].update(replicates="many"), "key 'bootstrap.replicates'"),
])
def test_forged_runs_json_is_refused_in_one_line_naming_file_and_key(tmp_path, capsys, bench_out, case, edit,
                                                                      expect):
    other = tmp_path / "other"
    shutil.copytree(bench_out, str(other))  # a folder a forged record could point at
    before = sorted(os.listdir(other / "arcface" / "seed0"))
    out = _forge(bench_out, str(tmp_path / "forged"), edit)
    assert main(["bench", "--report", out, "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expect in err[0] and os.path.join(out, "runs.json") in err[0], err
    assert sorted(os.listdir(other / "arcface" / "seed0")) == before  # nothing written into another folder
