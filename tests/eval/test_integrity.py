"""Evaluation never reports numbers from non-finite inputs, never reuses a cache of other inputs, never drops results."""
from __future__ import annotations

import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from _helpers_eval import TinyNet, export_onnx, make_ijb, make_pairs, write_bin
from lh2face_plugin.cli import main
from lh2face_plugin.eval import evaluate_ijb, evaluate_verification, torch_embedder
from lh2face_plugin.eval.ijb import IJBMeta, verification_1to1
from lh2face_plugin.eval.verification import decode_image, verification_metrics

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny ONNX models of the same architecture (same file size), and one that outputs NaN."""
    folder = tmp_path_factory.mktemp("models")
    a = export_onnx(TinyNet(seed=0), str(folder / "a.onnx"))
    b = export_onnx(TinyNet(seed=1), str(folder / "b.onnx"))
    bad = TinyNet(seed=2)
    with torch.no_grad():
        bad.fc.bias[3] = float("nan")
    nan = export_onnx(bad, str(folder / "nan.onnx"))
    return {"a": a, "b": b, "nan": nan}


def _verify(path, model, out, *extra):
    return main(["eval", "verify", path, "--model", model, "--onnx", "--batch-size", "8", "--out", str(out), *extra])


def _ijb(root, model, out):
    return main(["eval", "ijb", root, "--target", "SYNTH", "--model", model, "--onnx", "--batch-size", "8",
                 "--workers", "1", "--out", str(out)])


# ---------------------------------------------------------------- non-finite numbers
def test_a_model_that_outputs_nan_is_not_scored(models, tmp_path, capsys):
    images, issame = make_pairs(20, seed=1)
    path = write_bin(str(tmp_path / "v.bin"), images, issame)
    assert _verify(path, models["nan"], tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "NaN or infinite features" in err and "v.bin" in err
    assert not os.path.exists(tmp_path / "out" / "results.json")


def test_a_checkpoint_with_nan_weights_is_named(tmp_path, capsys):
    from lh2face_plugin.backbones import build_backbone

    images, issame = make_pairs(20, seed=1)
    path = write_bin(str(tmp_path / "v.bin"), images, issame)
    net = build_backbone("compact-tiny", embedding_size=64)
    state = net.state_dict()
    name = next(k for k, v in state.items() if v.is_floating_point() and v.dim() == 4)
    state[name][0, 0, 0, 0] = float("inf")
    torch.save(state, tmp_path / "model.pt")
    assert main(["eval", "verify", path, "--model", str(tmp_path / "model.pt"), "--network", "compact-tiny",
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"model.pt: parameter '{name}' holds NaN or infinite values" in err and err.count("\n") == 1


def test_metrics_refuse_non_finite_inputs():
    feats = np.random.default_rng(0).normal(size=(8, 2, 4)).astype(np.float32)
    issame = np.array([True, False, True, False])
    feats[5, 1, 2] = np.nan
    with pytest.raises(FloatingPointError, match="image 5"):
        verification_metrics(feats, issame, folds=2)
    scores = np.ones(8, np.float32)
    scores[3] = np.inf
    with pytest.raises(FloatingPointError, match="image 3"):
        verification_1to1(np.ones((8, 2, 4), np.float32), scores, np.arange(8) // 2, np.arange(8),
                          np.array([[0, 1, 0], [2, 3, 0]]))


def test_ijb_meta_with_nan_scores_or_landmarks_names_the_line(tmp_path):
    root = str(tmp_path / "ijb")
    make_ijb(root, "SYNTH", identities=2, templates_per_id=2, onen=False)
    p = os.path.join(root, "meta", "synth_name_5pts_score.txt")
    lines = open(p).read().splitlines()
    fields = lines[2].split()
    fields[-1] = "nan"
    lines[2] = " ".join(fields)
    open(p, "w").write("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"synth_name_5pts_score\.txt line 3: .*finite"):
        IJBMeta(root, "SYNTH")


# ---------------------------------------------------------------- caches keyed by content
def test_ijb_cache_is_not_reused_after_the_images_changed(models, tmp_path):
    root = str(tmp_path / "ijb")
    make_ijb(root, "SYNTH", identities=3, templates_per_id=2, onen=False, seed=0)
    other = str(tmp_path / "other")
    make_ijb(other, "SYNTH", identities=3, templates_per_id=2, onen=False, seed=5)
    out = tmp_path / "out"
    assert _ijb(root, models["a"], out) == 0
    first = json.load(open(out / "results.json"))["SYNTH"]["auc"]
    crops = os.path.join(root, "loose_crop")
    for name in os.listdir(crops):  # every image replaced by another picture, names and dates kept
        st = os.stat(os.path.join(crops, name))
        src = os.path.join(other, "loose_crop", name)
        if os.path.exists(src):
            shutil.copyfile(src, os.path.join(crops, name))
        os.utime(os.path.join(crops, name), ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _ijb(root, models["a"], out) == 0
    again = json.load(open(out / "results.json"))["SYNTH"]["auc"]
    assert _ijb(root, models["a"], tmp_path / "fresh") == 0
    fresh = json.load(open(tmp_path / "fresh" / "results.json"))["SYNTH"]["auc"]
    assert again == fresh != first


def test_verify_cache_is_keyed_by_the_bytes_of_model_and_data(models, tmp_path):
    images, issame = make_pairs(20, seed=1)
    path = write_bin(str(tmp_path / "v.bin"), images, issame, encoding="array", protocol=4)
    out = tmp_path / "out"
    feats = lambda model: evaluate_verification(_onnx(model), path, batch_size=4, cache_dir=str(out),  # noqa: E731
                                                cache_key="model")["features"]
    first = feats(models["a"])
    st = os.stat(path)
    images2, _ = make_pairs(20, seed=2)  # same size (raw arrays), other pictures, same date
    write_bin(path, images2, issame, encoding="array", protocol=4)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.path.getsize(path) == st.st_size
    second = feats(models["a"])
    assert not np.allclose(first, second)
    assert np.allclose(second, evaluate_verification(_onnx(models["a"]), path, batch_size=4)["features"])

    model = str(tmp_path / "m.onnx")  # the model file rewritten in place, same size and date
    shutil.copyfile(models["a"], model)
    cli_out = tmp_path / "cli"
    assert _verify(path, model, cli_out) == 0
    acc = json.load(open(cli_out / "results.json"))["v"]
    st = os.stat(model)
    shutil.copyfile(models["b"], model)
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.path.getsize(models["a"]) == os.path.getsize(models["b"])
    assert _verify(path, model, cli_out) == 2  # another model's features: refused, not reused
    assert json.load(open(cli_out / "results.json"))["v"] == acc


def _onnx(path):
    from lh2face_plugin.eval import onnx_embedder

    return onnx_embedder(path)


def test_damaged_cache_files_are_named_or_recomputed(models, tmp_path, capsys):
    images, issame = make_pairs(20, seed=1)
    path = write_bin(str(tmp_path / "v.bin"), images, issame)
    out = tmp_path / "out"
    assert _verify(path, models["a"], out) == 0
    good = json.load(open(out / "results.json"))["v"]["accuracy"]
    chunk = out / "features" / "v" / "chunk_00000.npy"
    chunk.write_bytes(chunk.read_bytes()[:100])  # a damaged chunk: recomputed
    assert _verify(path, models["a"], out) == 0
    assert json.load(open(out / "results.json"))["v"]["accuracy"] == good
    (out / "features" / "v" / "state.json").write_text("{ broken")
    assert _verify(path, models["a"], out) == 2
    err = capsys.readouterr().err
    assert "features/v/state.json is unreadable" in err and "delete" in err and err.count("\n") == 1


# ---------------------------------------------------------------- results of several commands
def test_two_commands_share_an_out_folder(models, tmp_path, capsys):
    images, issame = make_pairs(20, seed=3)
    path = write_bin(str(tmp_path / "lfw.bin"), images, issame)
    root = str(tmp_path / "ijb")
    make_ijb(root, "SYNTH", identities=2, templates_per_id=2, onen=False)
    out = tmp_path / "out"
    assert _verify(path, models["a"], out) == 0
    assert _ijb(root, models["a"], out) == 0
    res = json.load(open(out / "results.json"))
    assert set(res) == {"lfw", "SYNTH"} and res["lfw"]["run"]["command"] == "eval verify"
    assert (out / "roc_lfw.png").exists() and (out / "roc_SYNTH.png").exists()
    assert _verify(path, models["a"], out) == 0  # the same run again: replaced by the same numbers
    assert json.load(open(out / "results.json")) == res
    shutil.rmtree(out / "features" / "lfw")
    assert _verify(path, models["b"], out) == 2  # another model's numbers would replace these: refused
    assert "already holds results for 'lfw'" in capsys.readouterr().err
    assert json.load(open(out / "results.json")) == res


# ---------------------------------------------------------------- messages naming the right cause
def test_wrong_cause_messages(tmp_path):
    with pytest.raises(ValueError, match=r"v\.bin image 3: a 2-D uint8 array of shape \(112, 112\)"):
        decode_image(np.zeros((112, 112), np.uint8), where="v.bin image 3")
    root = str(tmp_path / "ijb")
    make_ijb(root, "SYNTH", identities=2, templates_per_id=2, onen=True)
    meta = os.path.join(root, "meta")
    tid = os.path.join(meta, "synth_face_tid_mid.txt")
    lines = open(tid).read().splitlines()
    open(tid, "w").write("\n" + "\n".join(lines[:-1]) + "\n")  # a blank first line, the last image missing
    with pytest.raises(ValueError, match=rf"first difference at row {len(lines)}: .*synth_name_5pts_score\.txt "
                                         rf"goes on from line {len(lines)}"):
        IJBMeta(root, "SYNTH")
    open(tid, "w").write("\n" + "\n".join(lines) + "\n")
    crop = os.path.join(root, "loose_crop", lines[1].split()[0])
    open(crop, "wb").write(b"not a picture")
    net = torch_embedder(TinyNet())
    with pytest.raises(ValueError, match=rf"{os.path.basename(crop)} \(line 3 of .*synth_face_tid_mid\.txt\): "
                                         "not an image format the package knows"):
        evaluate_ijb(net, root, "SYNTH", workers=1)
    probe = os.path.join(meta, "synth_1N_probe_mixed.csv")
    rows = open(probe).read().splitlines()
    open(probe, "w").write("\n".join(rows[:1] + ["", "99999,7,x.jpg"] + rows[1:]) + "\n")
    with pytest.raises(ValueError, match=r"1N_probe_mixed\.csv line 3: template 99999 has no images"):
        from lh2face_plugin.eval.ijb import identification_1toN

        m = IJBMeta(root, "SYNTH")
        identification_1toN(np.eye(len(np.unique(m.templates))), np.unique(m.templates), m.onen,
                            onen_lines=m.onen_lines)


def test_a_bin_holding_a_pickle_of_other_objects_is_refused(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(pickle.dumps(([np.zeros((112, 112), np.uint8)] * 2, [True])))
    with pytest.raises(ValueError, match="2-D uint8 array"):
        evaluate_verification(torch_embedder(TinyNet()), str(p))
