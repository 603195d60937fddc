"""No file content in errors (issue 23 item 5): every list parser, given a file whose first line looks
like a secret (a list linked to another file), names the file and the line, never the text."""
from __future__ import annotations

import os

import pytest

SECRET = "AKIA-S3CR3T-TOKEN=hunter2"


def _parsers(tmp_path):
    from lh2face_plugin.data.recordio import MXIndexedRecordIO
    from lh2face_plugin.data.tools import load_landmarks
    from lh2face_plugin.eval.ijb import _read_columns, _read_int_table, _read_onen_csv
    from lh2face_plugin.eval.verification import load_bin

    rec = tmp_path / "empty.rec"
    rec.write_bytes(b"")
    return {
        "meta/synth_face_tid_mid.txt": lambda p: _read_columns(p, 3),
        "meta/synth_name_5pts_score.txt": lambda p: _read_columns(p, 12),
        "meta/synth_template_pair_label.txt": lambda p: _read_int_table(p, 3),
        "meta/synth_1N_gallery_G1.csv": _read_onen_csv,
        "landmarks.csv": load_landmarks,
        "train.idx": lambda p: MXIndexedRecordIO(p, str(rec), "r"),
        "lfw.bin": load_bin,
    }


@pytest.mark.parametrize("name", ["meta/synth_face_tid_mid.txt", "meta/synth_name_5pts_score.txt",
                                  "meta/synth_template_pair_label.txt", "meta/synth_1N_gallery_G1.csv",
                                  "landmarks.csv", "train.idx", "lfw.bin"])
@pytest.mark.parametrize("first", [SECRET, f"1 2 {SECRET}", f"{SECRET},1", "TEMPLATE_ID,SUBJECT_ID\n" + SECRET])
def test_a_secret_looking_first_line_never_reaches_the_error(tmp_path, name, first):
    other = tmp_path / "private.txt"  # the list is a link to another file
    other.write_text(first + "\n")
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(other, path)
    try:
        _parsers(tmp_path)[name](str(path))
    except ValueError as exc:
        text = str(exc)
        assert "S3CR3T" not in text and "hunter2" not in text and "AKIA" not in text, text
        assert str(path) in text and "\n" not in text
    else:  # the parser read the line as data (a header, three fields): nothing to leak here
        assert (name, first) in ACCEPTED


ACCEPTED = {("meta/synth_1N_gallery_G1.csv", SECRET), ("meta/synth_1N_gallery_G1.csv", f"1 2 {SECRET}"),
            ("meta/synth_1N_gallery_G1.csv", f"{SECRET},1"), ("meta/synth_face_tid_mid.txt", f"1 2 {SECRET}")}
