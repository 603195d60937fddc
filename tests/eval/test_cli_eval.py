"""`lh2face eval verify|ijb` on tiny synthetic inputs with an ONNX model."""
import json

import pytest

from _helpers_eval import TinyNet, export_onnx, make_ijb, make_pairs, write_bin
from lh2face_plugin.cli import main


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    return export_onnx(TinyNet(), str(tmp_path_factory.mktemp("m") / "tiny.onnx"))


def test_verify_cli(onnx_model, tmp_path, capsys):
    images, issame = make_pairs(20, seed=4)
    path = write_bin(str(tmp_path / "tiny.bin"), images, issame)
    out = tmp_path / "out"
    rc = main(["eval", "verify", path, "--model", onnx_model, "--onnx", "--batch-size", "8", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "accuracy" in text and "XNorm" in text
    res = json.loads((out / "results.json").read_text())["tiny"]
    assert 0 <= res["accuracy"] <= 1 and res["pairs"] == 20 and "1e-3" not in res["tar_at_far"]
    assert (out / "roc_tiny.png").stat().st_size > 1000
    assert (out / "features" / "tiny" / "state.json").exists()


def test_ijb_cli(onnx_model, tmp_path, capsys):
    root = str(tmp_path / "ijb")
    info = make_ijb(root, "SYNTH", identities=3, templates_per_id=2)
    out = tmp_path / "out"
    rc = main(["eval", "ijb", root, "--target", "SYNTH", "--model", onnx_model, "--onnx", "--batch-size", "8",
               "--out", str(out), "--workers", "1"])
    assert rc == 0
    assert "TAR (%) at FAR" in capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())["SYNTH"]
    assert res["pairs"] == info["pairs"] and set(res["tar_at_far"]) == {str(f) for f in
                                                                          (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)}
    assert "identification" in res and (out / "roc_SYNTH.png").exists()


def test_cli_errors(onnx_model, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ARCFACE_TORCH_ROOT", raising=False)
    assert main(["eval", "ijb", str(tmp_path), "--model", "m.pt", "--network", "r50", "--reference"]) == 2
    assert "--reference needs an arcface_torch checkout" in capsys.readouterr().err
    images, issame = make_pairs(2)
    path = write_bin(str(tmp_path / "a.bin"), images, issame)
    (tmp_path / "m.pt").write_bytes(b"")
    assert main(["eval", "verify", path, "--model", str(tmp_path / "m.pt")]) == 2
    assert "needs --network" in capsys.readouterr().err
    assert main(["eval", "ijb", str(tmp_path), "--target", "IJBC", "--model", onnx_model, "--onnx"]) == 2
    assert "missing meta file" in capsys.readouterr().err
