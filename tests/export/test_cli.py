import json
import os

import pytest
import torch

from _helpers_export import tiny_backbone
from lh2face_plugin.cli import build_parser, main


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["export", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "lh2face export" in out and "--detector" in out


def test_export_checkpoint_to_pack_prints_parity(tmp_path, capsys):
    model = tiny_backbone(seed=2, embedding_size=256)
    ckpt = tmp_path / "model.pt"
    torch.save(model.state_dict(), ckpt)
    out_dir = tmp_path / "pack"
    rc = main(["export", str(ckpt), "--network", "compact-tiny", "--out", str(out_dir)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "batch   1: min cosine(onnxruntime, torch)" in out and "batch   8:" in out
    assert "dynamic batch: yes" in out and "routed to ArcFaceONNX" in out
    assert "cosine insightface_vs_torch" in out
    with open(out_dir / "manifest.json") as f:
        manifest = json.load(f)
    assert manifest["model_id"] == "pack" and manifest["tasks"]["recognition"]["embedding_dimension"] == 256

    rc = main(["export", str(out_dir / "recognition.onnx"), "--out", str(tmp_path / "repack"), "--model-id", "again", "--no-verify"])
    out = capsys.readouterr().out
    assert rc == 0 and "dynamic batch: yes" in out
    assert os.path.isfile(tmp_path / "repack" / "recognition.onnx")


def test_bad_input_exits_2_with_a_message(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ARCFACE_TORCH_ROOT", raising=False)
    ckpt = tmp_path / "model.pt"
    torch.save(tiny_backbone().state_dict(), ckpt)
    cases = [
        (["export", str(tmp_path / "none.pt"), "--network", "compact", "--out", str(tmp_path / "o")], "model file not found"),
        (["export", str(ckpt), "--out", str(tmp_path / "o")], "--network is required"),
        (["export", str(ckpt), "--network", "r50", "--out", str(tmp_path / "o")], "ARCFACE_TORCH_ROOT"),
        (["export", str(ckpt), "--network", "compact-wide", "--out", str(tmp_path / "o")], "does not match network"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o")


def test_export_refuses_a_folder_it_did_not_make_and_keeps_other_files(tmp_path, capsys):
    ckpt = tmp_path / "model.pt"
    torch.save(tiny_backbone(seed=1, embedding_size=128).state_dict(), ckpt)
    out = tmp_path / "shared"
    out.mkdir()
    (out / "manifest.json").write_text('{"theirs": true}')
    (out / "notes.txt").write_text("keep me")
    argv = ["export", str(ckpt), "--network", "compact-tiny", "--out", str(out), "--no-verify"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and (out / "manifest.json").read_text() == '{"theirs": true}'
    assert main(argv + ["--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "keep me" and json.loads((out / "manifest.json").read_text())["model_id"]
    assert sorted(p for p in os.listdir(tmp_path) if p.startswith(".")) == []


def test_a_failed_export_leaves_the_previous_pack(tmp_path, monkeypatch, exported):
    from lh2face_plugin.export import modelzoo

    out = tmp_path / "pack"
    modelzoo.pack_model_zoo(exported[1].path, str(out), model_id="first")
    before = {p: (out / p).read_bytes() for p in os.listdir(out)}

    def broken(*args, **kwargs):
        raise RuntimeError("insightface round trip failed")

    import lh2face_plugin.export.modelzoo as mz

    monkeypatch.setattr(mz, "verify_pack", broken)
    assert main(["export", exported[1].path, "--out", str(out), "--model-id", "second"]) == 2
    assert {p: (out / p).read_bytes() for p in os.listdir(out)} == before
    assert [p for p in os.listdir(tmp_path) if p != "pack"] == []


def test_a_model_with_nan_weights_is_not_exported(tmp_path, capsys):
    model = tiny_backbone(seed=3, embedding_size=64)
    with torch.no_grad():
        next(p for p in model.parameters() if p.dim() == 4)[0, 0, 0, 0] = float("nan")
    torch.save(model.state_dict(), tmp_path / "model.pt")
    assert main(["export", str(tmp_path / "model.pt"), "--network", "compact-tiny", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "holds NaN or infinite values" in err and "parity" not in err and not (tmp_path / "p").exists()
    from lh2face_plugin.export.onnx import export_onnx

    with pytest.raises(FloatingPointError, match="NaN or infinite embeddings"):
        export_onnx(model, str(tmp_path / "m.onnx"))
    assert not (tmp_path / "m.onnx").exists()


def _external_data_model(exported, folder, location="weights.bin"):
    import onnx

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "model.onnx")
    onnx.save_model(onnx.load(exported[1].path), path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin")
    if location != "weights.bin":  # onnx refuses to write such a model: edit the location by hand
        proto = onnx.load(path, load_external_data=False)
        for tensor in proto.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
        with open(path, "wb") as f:
            f.write(proto.SerializeToString())
    return path


def test_a_model_with_external_data_is_packed_with_its_weights(exported, tmp_path, capsys, monkeypatch):
    import onnxruntime as ort

    model = _external_data_model(exported, str(tmp_path / "src"))
    assert os.path.getsize(model) < 100_000 < os.path.getsize(tmp_path / "src" / "weights.bin")
    assert main(["export", model, "--out", str(tmp_path / "pack"), "--no-verify"]) == 0
    ort.InferenceSession(str(tmp_path / "pack" / "recognition.onnx"), providers=["CPUExecutionProvider"])
    os.remove(tmp_path / "src" / "weights.bin")
    assert main(["export", model, "--out", str(tmp_path / "pack2"), "--no-verify"]) == 2
    err = capsys.readouterr().err
    assert f"{model}: its weights are stored in 'weights.bin', which is missing" in err, err
    (tmp_path / "secret.bin").write_bytes(b"s" * 4096)
    escaping = _external_data_model(exported, str(tmp_path / "src2"), location="../secret.bin")
    assert main(["export", escaping, "--out", str(tmp_path / "pack3"), "--no-verify"]) == 2
    assert "names '../secret.bin', which resolves outside" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "pack2") and not os.path.exists(tmp_path / "pack3")

    import lh2face_plugin.export.modelzoo as modelzoo

    def failing_verify(pack_dir, reference=None):
        raise RuntimeError(f"cannot open {pack_dir}/recognition.onnx")

    monkeypatch.setattr(modelzoo, "verify_pack", failing_verify)
    assert main(["export", exported[1].path, "--out", str(tmp_path / "pack4")]) == 2
    err = capsys.readouterr().err
    assert f"cannot open {tmp_path / 'pack4'}/recognition.onnx" in err and ".part" not in err, err


def test_a_forged_ownership_manifest_does_not_make_the_users_file_ours(exported, tmp_path, capsys):
    out = tmp_path / "folder"
    out.mkdir()
    (out / "thesis.txt").write_text("four years")
    forged = {"thesis.txt": {"size": 10, "sha256": "0" * 64}}
    (out / ".lh2face-manifest.json").write_text(json.dumps(
        {"format": "lh2face-manifest/1", "command": "export", "files": forged}))
    assert main(["export", exported[1].path, "--out", str(out), "--no-verify"]) == 2
    assert f"{out / 'thesis.txt'}: changed since 'lh2face export' wrote it" in capsys.readouterr().err
    assert main(["export", exported[1].path, "--out", str(out), "--no-verify", "--overwrite"]) == 0
    assert (out / "thesis.txt").read_text() == "four years"
    assert main(["export", exported[1].path, "--out", str(out), "--no-verify"]) == 0  # ours now
    assert (out / "thesis.txt").read_text() == "four years"
    (out / "recognition.onnx").write_bytes(b"changed by the user")
    assert main(["export", exported[1].path, "--out", str(out), "--no-verify"]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'recognition.onnx'}: changed since 'lh2face export' wrote it" in err and "--overwrite" in err
    assert (out / "recognition.onnx").read_bytes() == b"changed by the user"
