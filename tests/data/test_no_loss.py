"""Nothing lost, nothing half-written, nothing silently wrong: data synth / build / shuffle / inspect and RecordIO."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from _helpers_recordio import face_like, write_insightface_rec
from lh2face_plugin.cli import main
from lh2face_plugin.fileio import FolderNotOwned
from lh2face_plugin.data.recordio import IRHeader, MXIndexedRecordIO, RecordIOError, pack
from lh2face_plugin.data.synthetic import generate_dataset
from lh2face_plugin.data.tools import build_dataset, inspect_record

SMALL = dict(identities=6, images_per_id=3, eval_identities=6, verify_pairs=20, render_eval=4, progress=False,
             workers=1)


def snapshot(folder):
    """{relative path: bytes} of every file under ``folder``."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            p = os.path.join(root, name)
            out[os.path.relpath(p, folder)] = open(p, "rb").read()
    return out


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def faces(root, counts, seed=0):
    rng = np.random.default_rng(seed)
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for j in range(n):
            Image.fromarray(face_like(rng)[:, :, ::-1]).save(root / name / f"{j:02d}.jpg", quality=90)
    return root


def bomb_png(width=20000, height=20000) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


# ---------------------------------------------------------------- data synth
def test_synth_refuses_a_foreign_folder_and_overwrite_keeps_the_users_files(tmp_path, capsys):
    out = tmp_path / "mine"
    (out / "ijb").mkdir(parents=True)
    (out / "ijb" / "notes.txt").write_text("the user's notes")
    (out / "property").write_text("the user's property file")
    with pytest.raises(FileExistsError, match=r"not empty .* --overwrite"):
        generate_dataset(out, seed=0, **SMALL)
    assert sorted(snapshot(out)) == ["ijb/notes.txt", "property"]
    assert main(["data", "synth", str(out), "--identities", "4", "--images-per-id", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    paths = generate_dataset(out, seed=0, overwrite=True, **SMALL)
    assert (out / "ijb" / "notes.txt").read_text() == "the user's notes"
    assert (out / "property").read_text() == "6,112,112\n"  # the same name: replaced, as --overwrite says
    assert os.path.exists(paths["ijb_pair_splits"])


def test_synth_rerun_with_other_settings_keeps_files_it_did_not_make(tmp_path):
    out = tmp_path / "set"
    generate_dataset(out, seed=0, **SMALL)
    (out / "ijb" / "notes.txt").write_text("added by the user")
    (out / "ijb" / "loose_crop" / "extra.jpg").write_bytes(b"user bytes")
    before = snapshot(out)
    generate_dataset(out, seed=1, **SMALL)  # our own dataset: replaced without --overwrite
    after = snapshot(out)
    assert after["ijb/notes.txt"] == b"added by the user" and after["ijb/loose_crop/extra.jpg"] == b"user bytes"
    assert after["train.rec"] != before["train.rec"]
    assert [n for n in os.listdir(tmp_path) if n != "set"] == []


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_synth_reuses_only_a_whole_dataset(tmp_path, damage):
    out = tmp_path / "set"
    paths = generate_dataset(out, seed=3, **SMALL)
    victim = paths["rec"] if damage == "truncate" else os.path.join(paths["ijb"], "loose_crop", "1.jpg")
    good = open(victim, "rb").read()
    data = bytearray(good)
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF  # same size, other content
    open(victim, "wb").write(bytes(data))
    with pytest.raises(FolderNotOwned, match=rf"{os.path.basename(victim)}: changed since 'lh2face data synth' wrote "
                                             "it .*pass --overwrite"):
        generate_dataset(out, seed=3, **SMALL)  # not reused, and not replaced without --overwrite
    assert open(victim, "rb").read() == bytes(data)
    generate_dataset(out, seed=3, overwrite=True, **SMALL)
    assert open(victim, "rb").read() == good


def test_synth_rerun_cleans_what_a_killed_run_left(tmp_path):
    out = tmp_path / "set"
    generate_dataset(out, seed=0, **SMALL)
    pid = dead_pid()
    stage = tmp_path / f".set.{pid}.0123abcd.part"
    stage.mkdir()
    (stage / "train.rec").write_bytes(b"half")
    inner = out / f".train.rec.{pid}.89abcdef.part"
    inner.write_bytes(b"half")
    generate_dataset(out, seed=0, **SMALL)  # reused, and cleaned
    assert not stage.exists() and not inner.exists()


# ---------------------------------------------------------------- data build / shuffle
def test_build_refuses_to_replace_a_dataset_it_did_not_make(tmp_path, capsys):
    src = faces(tmp_path / "faces", {"a": 2, "b": 1})
    out = tmp_path / "ms1m"
    out.mkdir()
    write_insightface_rec(str(out), [2, 2])  # someone else's train.rec / train.idx
    (out / "lfw.bin").write_bytes(b"their verification set")
    before = snapshot(out)
    assert main(["data", "build", str(src), str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ms1m" in err and "--overwrite" in err
    assert snapshot(out) == before
    assert main(["data", "build", str(src), str(out), "--quiet", "--overwrite"]) == 0
    after = snapshot(out)
    assert after["lfw.bin"] == b"their verification set" and after["train.rec"] != before["train.rec"]
    assert main(["data", "build", str(src), str(out), "--quiet"]) == 0  # ours now


def test_build_is_all_or_nothing_on_a_non_utf8_identity_folder(tmp_path):
    src = faces(tmp_path / "faces", {"a": 2, "b": 1})
    out = tmp_path / "ds"
    build_dataset(src, out, progress=False)
    before = snapshot(out)
    bad = os.path.join(os.fsencode(src), b"caf\xe9")
    os.mkdir(bad)
    Image.fromarray(face_like(np.random.default_rng(1))).save(os.path.join(os.fsdecode(bad), "0.jpg"))
    with pytest.raises(ValueError, match=r"identity folder name is not valid UTF-8 \(b'caf\\xe9'\)"):
        build_dataset(src, out, progress=False)
    assert snapshot(out) == before and sorted(os.listdir(tmp_path)) == ["ds", "faces"]


def test_build_is_all_or_nothing_on_a_write_error(tmp_path, monkeypatch):
    src = faces(tmp_path / "faces", {"a": 2, "b": 1})
    out = tmp_path / "ds"
    build_dataset(src, out, progress=False)
    before = snapshot(out)
    faces(src, {"c": 2}, seed=5)
    import lh2face_plugin.data.tools as tools

    real_open = open

    def failing_open(path, *a, **k):  # the disk fills up while classes.txt is written
        if "classes.txt" in str(path):
            raise OSError(28, "No space left on device", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(tools, "open", failing_open, raising=False)
    with pytest.raises(OSError, match="No space left"):
        build_dataset(src, out, progress=False)
    assert snapshot(out) == before and sorted(os.listdir(tmp_path)) == ["ds", "faces"]


def test_build_decodes_what_it_stores(tmp_path, capsys):
    src = faces(tmp_path / "faces", {"a": 2, "b": 1})
    data = (src / "a" / "01.jpg").read_bytes()
    (src / "a" / "01.jpg").write_bytes(data[: len(data) * 3 // 4])  # a copy that stopped early
    assert main(["data", "build", str(src), str(tmp_path / "ds"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "01.jpg: a truncated JPEG" in err and err.count("\n") == 1
    assert not (tmp_path / "ds").exists()
    (src / "a" / "01.jpg").write_bytes(bomb_png())
    assert main(["data", "build", str(src), str(tmp_path / "ds"), "--quiet"]) == 2
    assert "01.jpg: the PNG header declares 20000x20000 pixels" in capsys.readouterr().err


def test_shuffle_refuses_a_foreign_folder(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    write_insightface_rec(str(src), [2, 2])
    out = tmp_path / "dali"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["data", "shuffle", str(src), str(out), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err and os.listdir(out) == ["keep.txt"]
    assert main(["data", "shuffle", str(src), str(out), "--quiet", "--overwrite"]) == 0
    assert (out / "keep.txt").read_text() == "x" and (out / "train.rec").exists()


# ---------------------------------------------------------------- RecordIO and inspect
def test_duplicate_keys_are_errors(tmp_path):
    rec, idx = str(tmp_path / "x.rec"), str(tmp_path / "x.idx")
    with MXIndexedRecordIO(idx, rec, "w") as w:
        w.write_idx(1, b"a")
        with pytest.raises(ValueError, match="key 1 was already written"):
            w.write_idx(1, b"b")
        w.write_idx(2, b"c")
    with open(idx, "a") as f:
        f.write("1\t8\n")  # a second line for key 1
    with pytest.raises(RecordIOError, match=r"x\.idx: line 3: key 1 is also on line 1"):
        MXIndexedRecordIO(idx, rec, "r")


def test_non_utf8_index_names_the_file_and_line(tmp_path):
    rec, idx = str(tmp_path / "x.rec"), str(tmp_path / "x.idx")
    with MXIndexedRecordIO(idx, rec, "w") as w:
        w.write_idx(0, b"a")
    open(idx, "ab").write(b"1\t\xff\xfe\n")
    with pytest.raises(RecordIOError, match=r"x\.idx: line 2: the byte at byte offset 6 is not UTF-8"):
        MXIndexedRecordIO(idx, rec, "r")


@pytest.mark.parametrize("case, problem", [
    ("missing", "train.idx: missing"),
    ("empty", "train.idx: empty index, but the .rec holds"),
    ("garbage", "expected 'key<TAB>offset'"),
    ("shifted", "do not point at the start of a record"),
    ("binary", "is not UTF-8"),
    ("truncated", "truncated file"),
    ("short index", "6 keys for 8 records read from the .rec"),
])
def test_strict_inspect_checks_the_index(tmp_path, capsys, case, problem):
    rec, idx, _, _ = write_insightface_rec(str(tmp_path), [2, 3])
    if case == "missing":
        os.remove(idx)
    elif case == "empty":
        open(idx, "w").close()
    elif case == "garbage":
        open(idx, "w").write("this is not an index\n")
    elif case == "shifted":
        lines = open(idx).read().splitlines()
        k, off = lines[2].split("\t")
        lines[2] = f"{k}\t{int(off) + 4}"
        open(idx, "w").write("\n".join(lines) + "\n")
    elif case == "binary":
        open(idx, "wb").write(open(rec, "rb").read()[:200])
    elif case == "truncated":
        data = open(rec, "rb").read()
        open(rec, "wb").write(data[: len(data) - 300])
    else:
        lines = open(idx).read().splitlines()
        open(idx, "w").write("\n".join(lines[:-2]) + "\n")
    for strict in ([], ["--strict"]):  # integrity failures exit 1 with or without --strict
        assert main(["data", "inspect", str(tmp_path), "--no-sheet", "--quiet"] + strict) == 1
        text = capsys.readouterr().out
        assert problem in text and "problems        none" not in text


def test_strict_inspect_decodes_every_image(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rec, idx = str(tmp_path / "train.rec"), str(tmp_path / "train.idx")
    good = Image.fromarray(face_like(rng))
    import io

    buf = io.BytesIO()
    good.save(buf, format="JPEG", quality=90)
    jpg = buf.getvalue()
    with MXIndexedRecordIO(idx, rec, "w") as w:
        w.write_idx(0, pack(IRHeader(0, [41, 42], 0, 0), b""))
        for k in range(1, 41):
            body = jpg[: len(jpg) // 2] if k == 33 else jpg
            w.write_idx(k, pack(IRHeader(0, [0, 0], k, 0), body))
        w.write_idx(41, pack(IRHeader(0, [1, 41], 0, 0), b""))
    assert main(["data", "inspect", str(tmp_path), "--no-sheet", "--quiet", "--samples", "2"]) == 0
    assert main(["data", "inspect", str(tmp_path), "--no-sheet", "--quiet", "--strict"]) == 1
    assert "1 image(s) do not decode: record #33: a truncated JPEG" in capsys.readouterr().out
    s = inspect_record(str(tmp_path), progress=False, strict=True)
    assert s.image_shapes == {(112, 112, 3): 39}


def test_inspect_reports_a_damaged_rec_instead_of_failing(tmp_path):
    rec, idx, _, _ = write_insightface_rec(str(tmp_path), [2, 3])
    data = open(rec, "rb").read()
    open(rec, "wb").write(data[: len(data) - 50])
    s = inspect_record(str(tmp_path), progress=False)
    assert any("truncated file" in p and "the records after it were not read" in p for p in s.problems)


def test_inspect_names_nan_labels(tmp_path):
    rng = np.random.default_rng(0)
    rec, idx = str(tmp_path / "train.rec"), str(tmp_path / "train.idx")
    from lh2face_plugin.data.recordio import pack_img

    with MXIndexedRecordIO(idx, rec, "w") as w:
        for k, label in enumerate([0.0, 1.0, float("nan"), 1.0]):
            w.write_idx(k, pack_img(IRHeader(0, label, k, 0), face_like(rng), img_fmt=".png"))
    s = inspect_record(str(tmp_path), progress=False)
    assert s.problems == ["1 image record(s) have a NaN or infinite label, e.g. record #2 (counting image records)"]
    assert s.classes == 2 and s.label_range == (0.0, 1.0)


def test_inspect_reports_labels_outside_the_declared_classes(tmp_path, capsys):
    """An im2rec set labelled 1..3 with ``property`` 3: arcface_torch's num_classes = 3 meets label 3."""
    import io

    buf = io.BytesIO()
    Image.fromarray(face_like(np.random.default_rng(0))).save(buf, format="JPEG", quality=90)
    with MXIndexedRecordIO(str(tmp_path / "train.idx"), str(tmp_path / "train.rec"), "w") as w:
        for k in range(6):
            w.write_idx(k, pack(IRHeader(0, float(1 + k % 3), k, 0), buf.getvalue()))
    open(tmp_path / "property", "w").write("3,112,112\n")
    assert main(["data", "inspect", str(tmp_path), "--no-sheet", "--quiet", "--strict"]) == 1
    text = capsys.readouterr().out
    assert "label out of range at image record #2: 3 (expected a label in [0, 3)" in text
    open(tmp_path / "property", "w").write("4,112,112\n")
    main(["data", "inspect", str(tmp_path), "--no-sheet", "--quiet", "--strict"])
    assert "label out of range" not in capsys.readouterr().out
