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
