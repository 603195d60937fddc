"""lh2face data build / inspect / shuffle / synth on tiny generated image folders."""
from __future__ import annotations

import os
import sys
import types

import numpy as np
import pytest
from PIL import Image

from _helpers_recordio import face_like, write_insightface_rec
from lh2face_plugin.cli import main
from lh2face_plugin.data.dataset import FaceRecordDataset
from lh2face_plugin.data.recordio import IRHeader, MXIndexedRecordIO, imdecode, pack, unpack
from lh2face_plugin.data.tools import build_dataset, inspect_record, load_landmarks

ARCFACE_5PTS = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)
DOT_COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]  # RGB


@pytest.fixture
def image_folder(tmp_path):
    """faces/<id>/*: 3 identities (2, 3, 1 images), JPEG and PNG, 112x112, plus a hidden file."""
    rng = np.random.default_rng(0)
    root = tmp_path / "faces"
    counts = {"alice": 2, "bob": 3, "carol": 1}
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for j in range(n):
            ext = ".png" if j % 2 else ".jpg"
            Image.fromarray(face_like(rng)[:, :, ::-1]).save(root / name / f"{j:02d}{ext}")
    (root / "alice" / ".DS_Store").write_bytes(b"junk")
    (root / "empty").mkdir()
    return root, counts


def _records(folder):
    r = MXIndexedRecordIO(os.path.join(folder, "train.idx"), os.path.join(folder, "train.rec"), "r")
    return {k: unpack(r.read_idx(k)) for k in r.keys}


def test_cli_build_insightface_layout(image_folder, tmp_path, capsys):
    root, counts = image_folder
    out = tmp_path / "ds"
    assert main(["data", "build", str(root), str(out), "--quiet"]) == 0
    assert "6 images of 3 identities" in capsys.readouterr().out
    recs = _records(out)
    assert sorted(recs) == list(range(10))
    head, body = recs[0]
    assert head.flag == 2 and head.label.tolist() == [7, 10] and body == b""
    assert all(recs[k][0].flag == 0 for k in range(1, 7)), "scalar image labels, as arcface_torch reads them"
    labels = [int(recs[k][0].label) for k in range(1, 7)]
    assert labels == [0, 0, 1, 1, 1, 2]
    assert [recs[k][0].label.tolist() for k in (7, 8, 9)] == [[1, 3], [3, 6], [6, 7]]
    assert recs[1][1] == (root / "alice" / "00.jpg").read_bytes()  # stored byte for byte
    assert (out / "property").read_text() == "3,112,112\n"
    assert (out / "classes.txt").read_text().split() == ["alice", "bob", "carol"]
    ds = FaceRecordDataset(str(out), random_flip=False)
    assert len(ds) == 6 and ds.num_classes == 3 and ds[5][1].item() == 2
    assert sorted(os.listdir(out)) == [".lh2face-manifest.json", "classes.txt", "property", "train.idx", "train.rec"]


def _scene_with_dots(angle_deg=12.0, scale=1.6, shift=(30.0, 20.0), size=(220, 200)):
    """A BGR image with coloured dots where a rotated/scaled ArcFace template puts the 5 points."""
    a = np.deg2rad(angle_deg)
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]], dtype=np.float32)
    pts = ARCFACE_5PTS @ rot.T + np.asarray(shift, dtype=np.float32)
    img = np.full((size[0], size[1], 3), 128, np.uint8)
    for (x, y), rgb in zip(pts, DOT_COLOURS):
        xi, yi = int(round(x)), int(round(y))
        img[yi - 6:yi + 7, xi - 6:xi + 7] = rgb[::-1]
    return img, pts


def test_build_aligns_with_landmarks(tmp_path):
    pytest.importorskip("insightface")
    root = tmp_path / "raw"
    (root / "p0").mkdir(parents=True)
    img, pts = _scene_with_dots()
    Image.fromarray(img[:, :, ::-1]).save(root / "p0" / "a.png")
    csv = tmp_path / "lmk.csv"
    csv.write_text("path,x1,y1,x2,y2,x3,y3,x4,y4,x5,y5\n./p0/a.png," + ",".join(f"{v:.3f}" for v in pts.ravel()) + "\n")
    res = build_dataset(root, tmp_path / "out", landmarks=csv, quality=98, progress=False)
    assert res["num_images"] == 1
    head, body = _records(tmp_path / "out")[1]
    assert head.flag == 0 and head.label == 0.0
    aligned = imdecode(body, 1)
    assert aligned.shape == (112, 112, 3)
    for (x, y), rgb in zip(ARCFACE_5PTS, DOT_COLOURS):
        got = aligned[int(round(y)), int(round(x))][::-1].astype(int)
        assert np.abs(got - np.array(rgb)).max() < 40, (x, y, got, rgb)


def test_build_errors_and_atomicity(image_folder, tmp_path):
    root, _ = image_folder
    out = tmp_path / "ds"
    bad_csv = tmp_path / "bad.csv"
    for q in (-5, 0, 500, 95.5, True):
        with pytest.raises(ValueError, match="quality must be a JPEG quality, an integer in \\[1, 100\\]"):
            build_dataset(root, out, quality=q, progress=False)
    with pytest.raises(ValueError, match="image_size must be an integer >= 16"):
        build_dataset(root, out, image_size=0, progress=False)
    bad_csv.write_text("alice/00.jpg,1,2,3\n")
    with pytest.raises(ValueError, match=r"bad\.csv, line 1: expected 'relative_path,x1,y1"):
        load_landmarks(bad_csv)
    bad_csv.write_text("alice/00.jpg" + ",1" * 10 + "\n")
    with pytest.raises(ValueError, match=r"no landmarks for 5 image\(s\), e\.g\. alice/01\.png"):
        build_dataset(root, out, landmarks=bad_csv, progress=False)
    Image.fromarray(np.zeros((90, 80, 3), np.uint8)).save(root / "carol" / "zz.png")
    with pytest.raises(ValueError, match=r"carol/zz\.png: image is 80x90, expected aligned 112x112"):
        build_dataset(root, out, progress=False)
    assert not os.path.exists(out)  # the interrupted build left nothing behind
    res = build_dataset(root, out, resize=True, progress=False)
    assert res["num_images"] == 7 and imdecode(_records(out)[7][1], 1).shape == (112, 112, 3)
    (root / "carol" / "zz.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"zz\.png: not an image format the package knows"):
        build_dataset(root, out, progress=False)
    assert _records(out)[0][0].label.tolist() == [8, 11]  # the earlier dataset is intact


def test_cli_inspect(tmp_path, capsys):
    write_insightface_rec(str(tmp_path), [2, 3, 4])
    (tmp_path / "property").write_text("3,112,112\n")
    sheet = tmp_path / "sheet.png"
    assert main(["data", "inspect", str(tmp_path), "--sheet", str(sheet), "--samples", "4", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "insightface" in text and "13 (9 images, 4 without image)" in text and "problems        none" in text
    with Image.open(sheet) as im:
        assert im.format == "PNG" and im.size[0] > 100
    s = inspect_record(tmp_path, samples=100, progress=False)
    assert (s.images, s.classes, s.images_per_class, s.image_shapes) == (9, 3, (2, 3.0, 4), {(112, 112, 3): 9})
    assert s.label_widths == {2: 13}


def test_inspect_reports_problems(tmp_path, capsys):
    rec, idx = str(tmp_path / "train.rec"), str(tmp_path / "train.idx")
    with MXIndexedRecordIO(idx, rec, "w") as w:
        w.write_idx(0, pack(IRHeader(0, [5, 7], 0, 0), b""))  # declares 4 images and 2 identities
        for k in (1, 2, 3):
            w.write_idx(k, pack(IRHeader(0, [0, 0], k, 0), b"\xff\xd8junk"))
        w.write_idx(4, pack(IRHeader(0, [1, 4], 0, 0), b""))
    (tmp_path / "property").write_text("2,112,112\n")
    assert main(["data", "inspect", rec, "--no-sheet", "--strict", "--quiet"]) == 1
    text = capsys.readouterr().out
    assert "declares 4 images, found 3" in text and "declares 2 identity records, found 1" in text
    assert "property says 2 classes, the records hold 1" in text and "do not decode" in text


def test_cli_shuffle_for_dali(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    _, _, images, labels = write_insightface_rec(str(src), [3, 3, 3], img_fmt=".jpg")
    (src / "property").write_text("3,112,112\n")
    out = tmp_path / "dali"
    assert main(["data", "shuffle", str(src), str(out), "--seed", "3", "--quiet"]) == 0
    assert "9 image records shuffled" in capsys.readouterr().out
    before, after = _records(src), _records(out)
    assert sorted(after) == list(range(9))
    assert all(h.flag == 0 and isinstance(h.label, float) for h, _ in after.values())
    original = [(before[k][0].label[0], before[k][1]) for k in range(1, 10)]
    shuffled = [(h.label, body) for h, body in (after[k] for k in range(9))]
    assert sorted(shuffled) == sorted(original) and shuffled != original
    assert (out / "property").read_text() == "3,112,112\n"
    assert main(["data", "shuffle", str(out), str(out), "--quiet"]) == 2
    assert "must go to another folder" in capsys.readouterr().err


def test_cli_synth_calls_generator(tmp_path, monkeypatch, capsys):
    calls = []

    def generate_dataset(out, identities, images_per_id, seed, overwrite, **sizes):
        calls.append((out, identities, images_per_id, seed, overwrite, sizes))
        return {"rec": os.path.join(out, "train.rec"), "verify": os.path.join(out, "verify.bin")}

    fake = types.ModuleType("lh2face_plugin.data.synthetic")
    fake.generate_dataset = generate_dataset
    monkeypatch.setitem(sys.modules, "lh2face_plugin.data.synthetic", fake)
    import lh2face_plugin.data as data_pkg
    monkeypatch.setattr(data_pkg, "synthetic", fake, raising=False)
    out = str(tmp_path / "syn")
    assert main(["data", "synth", out, "--identities", "4", "--images-per-id", "3", "--seed", "9"]) == 0
    assert main(["data", "synth", out, "--identities", "4", "--images-per-id", "3", "--overwrite",
                 "--verify-pairs", "8", "--render-eval", "2"]) == 0
    assert calls == [(out, 4, 3, 9, False, {}), (out, 4, 3, 0, True, {"verify_pairs": 8, "render_eval": 2})]
    assert os.path.join(out, "verify.bin") in capsys.readouterr().out


def test_cli_reports_bad_input(tmp_path, capsys):
    assert main(["data", "inspect", str(tmp_path / "none.rec"), "--no-sheet"]) == 2
    assert "none.rec: no RecordIO file" in capsys.readouterr().err


def test_build_refuses_images_that_resolve_outside_the_folder(image_folder, tmp_path):
    root, _ = image_folder
    elsewhere = tmp_path / "elsewhere.jpg"
    elsewhere.write_bytes((root / "alice" / "00.jpg").read_bytes())
    os.symlink(elsewhere, root / "bob" / "zz.jpg")
    with pytest.raises(ValueError, match=r"image folder .*faces: names 'bob/zz\.jpg', which resolves outside"):
        build_dataset(root, tmp_path / "ds", progress=False)
    assert not os.path.exists(tmp_path / "ds")
    os.remove(root / "bob" / "zz.jpg")
    os.symlink(root / "alice" / "00.jpg", root / "bob" / "zz.jpg")  # a link inside the folder is fine
    assert build_dataset(root, tmp_path / "ds", progress=False)["num_images"] == 7


def test_build_owns_only_what_its_manifest_proves(image_folder, tmp_path):
    """File names alone (a folder of train.rec and classes.txt) do not make a folder ours: --overwrite is needed."""
    root, _ = image_folder
    out = tmp_path / "looks_like_a_build"
    out.mkdir()
    (out / "train.rec").write_bytes(b"someone's own file")
    (out / "classes.txt").write_text("x\n")
    with pytest.raises(FileExistsError, match="not empty .*was not made by 'lh2face data build'.*--overwrite"):
        build_dataset(root, out, progress=False)
    assert (out / "train.rec").read_bytes() == b"someone's own file"
    build_dataset(root, out, progress=False, overwrite=True)
    assert _records(out)[0][0].label.tolist() == [7, 10]


def test_inspect_strict_checks_each_key_against_the_identity_ranges(tmp_path, capsys):
    """Issue 23 item 9: an .idx whose keys point at another identity's records (every offset still the
    start of a record) fails --strict, read as arcface_torch reads: key -> record -> label."""
    write_insightface_rec(str(tmp_path), [2, 3])
    (tmp_path / "property").write_text("2,112,112\n")
    assert main(["data", "inspect", str(tmp_path), "--no-sheet", "--strict", "--quiet"]) == 0
    capsys.readouterr()
    idx = tmp_path / "train.idx"
    lines = idx.read_text().splitlines()
    offsets = {int(k): v for k, v in (line.split("\t") for line in lines)}
    offsets[1], offsets[3] = offsets[3], offsets[1]  # key 1 (identity 0) now reads an image of identity 1
    idx.write_text("".join(f"{k}\t{v}\n" for k, v in offsets.items()))
    assert main(["data", "inspect", str(tmp_path), "--no-sheet", "--strict", "--quiet"]) == 1
    text = capsys.readouterr().out
    assert "2 key(s) of the index point at a record of another identity, e.g. key 1 (identity record 0's " \
           "range) reads a record labelled 1" in text
