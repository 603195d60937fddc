import os

import numpy as np
import pytest
from PIL import Image

from lh2face_plugin.cli import build_parser, main

TOM = None
try:
    import insightface

    TOM = os.path.join(os.path.dirname(insightface.__file__), "data", "images", "Tom_Hanks_54745.png")
except ImportError:
    pass


def test_help_lists_examples(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["render", "--help"])
    out = capsys.readouterr().out
    assert "lh2face render show" in out and "lh2face render pretrain" in out


def test_show_draws_a_png(tmp_path):
    face = tmp_path / "face.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (112, 112, 3), dtype=np.uint8)).save(face)
    wide = tmp_path / "wide.jpg"
    Image.fromarray(np.full((200, 300, 3), 128, np.uint8)).save(wide)
    out = tmp_path / "grid.png"
    assert main(["render", "show", str(face), str(wide), "--out", str(out)]) == 0
    img = Image.open(out)
    assert img.format == "PNG" and img.size[0] > img.size[1]
    assert sorted(os.listdir(tmp_path)) == ["face.png", "grid.png", "wide.jpg"]  # no staging file left


def test_show_real_photo_from_insightface(tmp_path):
    if TOM is None or not os.path.isfile(TOM):
        pytest.skip("insightface sample image not installed")
    out = tmp_path / "tom.png"
    assert main(["render", "show", TOM, "--out", str(out)]) == 0
    assert out.stat().st_size > 0


def test_pretrain_on_a_folder_then_show_with_the_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    ckpt = tmp_path / "r.pt"
    assert main(["render", "pretrain", "--data", str(folder), "--steps", "2", "--batch-size", "2",
                 "--width", "4", "--out", str(ckpt)]) == 0
    assert ckpt.exists()
    assert main(["render", "show", str(folder / "0.png"), "--checkpoint", str(ckpt), "--out",
                 str(tmp_path / "g.png")]) == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["render", "show", "nope.jpg", "--out", "x.png"], "nope.jpg"),
        (["render", "show", "--out", "x.png"], "IMAGE"),
        (["render", "pretrain", "--data", "no_such_dir", "--steps", "1", "--out", "x.pt"], "no_such_dir"),
        (["render", "eval", "--checkpoint", "missing.pt"], "missing.pt"),
    ],
)
def test_bad_input_gives_a_clear_error(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_folder_with_wrong_size_images_names_the_file(tmp_path, capsys):
    folder = tmp_path / "faces"
    folder.mkdir()
    Image.fromarray(np.zeros((100, 90, 3), np.uint8)).save(folder / "odd.png")
    assert main(["render", "pretrain", "--data", str(folder), "--steps", "1", "--batch-size", "1",
                 "--width", "4", "--out", str(tmp_path / "r.pt")]) == 2
    assert "odd.png" in capsys.readouterr().err


def test_eval_and_show_on_synthetic_faces(tmp_path, capsys):
    pytest.importorskip("lh2face_plugin.data.synthetic")
    assert main(["render", "eval", "--num", "2"]) == 0
    table = capsys.readouterr().out
    assert "SIDE" in table and "flat depth" in table and "oracle geometry" in table
    assert main(["render", "show", "--synthetic", "1", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0
    assert main(["render", "show", "--synthetic", "1", "--albedo", "frontalised", "--out", str(tmp_path / "f.png")]) == 0
    assert (tmp_path / "f.png").stat().st_size > 0


def test_supervised_pretraining_without_reco_reports_its_loss(tmp_path, capsys):
    out = tmp_path / "r.pt"
    assert main(["render", "pretrain", "--data", "synthetic", "--supervision", "1", "--reco-weight", "0",
                 "--steps", "2", "--batch-size", "2", "--pool", "4", "--width", "8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "supervised" in printed and "reco " not in printed and out.exists()


def test_synthetic_pretraining_defaults_to_the_ground_truth_bootstrap(tmp_path, capsys):
    out = tmp_path / "r.pt"
    assert main(["render", "pretrain", "--steps", "1", "--batch-size", "2", "--pool", "2", "--width", "8",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "supervised" in printed and "reco " not in printed
    assert main(["render", "pretrain", "--checkpoint", str(out), "--supervision", "0", "--albedo", "frontalised",
                 "--steps", "1", "--batch-size", "2", "--pool", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "reco " in printed and "supervised" not in printed


def test_render_without_action_prints_help(capsys):
    assert main(["render"]) == 0
    assert "pretrain" in capsys.readouterr().out


def test_pretrain_does_not_overwrite_a_file_it_did_not_make(tmp_path, capsys):
    other = tmp_path / "model.pt"
    other.write_bytes(b"someone's trained backbone")
    assert main(["render", "pretrain", "--steps", "1", "--batch-size", "2", "--pool", "2", "--width", "4",
                 "--out", str(other)]) == 2
    assert "not a render checkpoint" in capsys.readouterr().err and other.read_bytes() == b"someone's trained backbone"


def test_pretrain_out_at_a_folder_says_so(tmp_path, capsys):
    folder = tmp_path / "runs"
    folder.mkdir()
    assert main(["render", "pretrain", "--steps", "1", "--batch-size", "2", "--pool", "2", "--width", "4",
                 "--out", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err == (f"lh2face render pretrain: error: --out {folder} is a folder; give the checkpoint file to write, "
                   f"e.g. --out {folder / 'render.pt'}\n")
    assert not list(folder.iterdir())


def test_show_does_not_draw_over_its_input(tmp_path, capsys):
    face = tmp_path / "face.png"
    Image.fromarray(np.zeros((112, 112, 3), np.uint8)).save(face)
    before = face.read_bytes()
    assert main(["render", "show", str(face), "--out", str(face)]) == 2
    assert "one of the input images" in capsys.readouterr().err and face.read_bytes() == before


def test_a_checkpoint_with_nan_is_not_evaluated(tmp_path, capsys):
    import torch

    from lh2face_plugin.render.module import RenderInputModule

    module = RenderInputModule(width=4)
    with torch.no_grad():
        next(module.net.parameters()).fill_(float("nan"))
    module.save_reconstruction(str(tmp_path / "nan.pt"))
    assert main(["render", "eval", "--checkpoint", str(tmp_path / "nan.pt"), "--num", "2"]) == 2
    err = capsys.readouterr().err
    assert "nan.pt: parameter" in err and "NaN" in err


def test_pretraining_that_diverges_writes_nothing(tmp_path, capsys, monkeypatch):
    import lh2face_plugin.render.pretrain as pretrain_mod

    monkeypatch.setattr(pretrain_mod, "pretrain", lambda *a, **k: [{"supervised": 0.3}, {"supervised": float("nan")}])
    out = tmp_path / "r.pt"
    assert main(["render", "pretrain", "--steps", "2", "--batch-size", "2", "--pool", "2", "--width", "4",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "NaN or infinite at step 2" in err and "lower --lr" in err and not out.exists()
    assert main(["render", "pretrain", "--lr", "inf", "--out", str(out)]) == 2
    assert "--lr must be a finite number > 0" in capsys.readouterr().err
