"""lh2face_plugin.data.recordio: the edges the round-trip tests do not reach (issue 27, mutation testing).

Written from the format (dmlc RecordIO: magic 0xCED7230A, ``cflag << 29 | length``, 4-byte padding;
the 24-byte IRHeader ``<IfQQ``; ``key<TAB>offset`` index lines) and the module's docstrings.
"""
from __future__ import annotations

import errno
import functools
import gc
import multiprocessing
import os
import pickle
import struct
import sys
import warnings

import numpy as np
import pytest

from lh2face_plugin import images
from lh2face_plugin.data import recordio
from lh2face_plugin.data.recordio import (MAGIC, IRHeader, MXIndexedRecordIO, MXRecordIO, RecordIOError,
                                          check_header, imdecode, imencode, pack, pack_img, unpack, unpack_img)
from lh2face_plugin.fileio import NotRegularFile


MAGIC_BYTES = struct.pack("<I", MAGIC)


def _part(cflag, payload):
    """One record part as the format lays it out: magic, lrecord, payload, zero padding to 4 bytes."""
    return struct.pack("<II", MAGIC, cflag << 29 | len(payload)) + payload + b"\0" * (-len(payload) & 3)


def _rec(tmp_path, payloads, name="e"):
    rec, idx = str(tmp_path / f"{name}.rec"), str(tmp_path / f"{name}.idx")
    with MXIndexedRecordIO(idx, rec, "w") as w:
        for i, p in enumerate(payloads):
            w.write_idx(i, p)
    return rec, idx


@pytest.mark.parametrize("payload, expected", [
    # an unaligned magic (kept) before two aligned ones (each one a split): cflag 1, 2, 3
    (b"a" + MAGIC_BYTES + b"bcd" + MAGIC_BYTES + MAGIC_BYTES + b"e",
     "0a23d7ce 08000020 61 0a23d7ce 626364 0a23d7ce 00000040 0a23d7ce 01000060 65 000000"),
    # three aligned magics in a row: an empty first part, two empty middle parts, the last part
    (MAGIC_BYTES * 3 + b"x", "0a23d7ce 00000020 0a23d7ce 00000040 0a23d7ce 00000040 0a23d7ce 01000060 78 000000"),
])
def test_writer_splits_at_every_aligned_magic(tmp_path, payload, expected):
    rec = str(tmp_path / "s.rec")
    with MXRecordIO(rec, "w") as w:
        w.write(payload)
        assert w.tell() == len(bytes.fromhex(expected))
    with open(rec, "rb") as f:
        assert f.read() == bytes.fromhex(expected)
    with MXRecordIO(rec, "r") as r:
        assert r.read() == payload and r.read() is None


# -- reading: errors name the file, the record and the byte offset --------------------------------
def test_empty_rec_reads_as_no_records(tmp_path):
    rec = str(tmp_path / "empty.rec")
    MXRecordIO(rec, "w").close()
    assert os.path.getsize(rec) == 0
    with MXRecordIO(rec, "r") as r:
        assert r.read() is None and list(r) == []


def test_rec_that_is_a_folder_is_refused_naming_its_role(tmp_path):
    folder = tmp_path / "d.rec"
    folder.mkdir()
    with pytest.raises(NotRegularFile, match=r"d\.rec: not a regular file \(a folder\); a RecordIO file must be"):
        MXRecordIO(str(folder), "r")


def test_missing_idx_says_what_it_is_for(tmp_path):
    rec, idx = _rec(tmp_path, [b"a"])
    os.unlink(idx)
    with pytest.raises(FileNotFoundError) as e:
        MXIndexedRecordIO(idx, rec, "r")
    assert str(e.value) == f"{idx}: index file for {rec} not found (random access needs the .idx written with the .rec)"


@pytest.mark.parametrize("key_type", [int, str])
def test_idx_that_is_a_folder_is_refused_naming_its_role(tmp_path, key_type):
    rec, _ = _rec(tmp_path, [b"a"])
    folder = tmp_path / "d.idx"
    folder.mkdir()
    with pytest.raises(NotRegularFile, match=r"d\.idx: not a regular file \(a folder\); an index \(\.idx\) must be"):
        MXIndexedRecordIO(str(folder), rec, "r", key_type=key_type)


def test_truncated_part_header_says_how_many_bytes_remain(tmp_path):
    path = tmp_path / "t.rec"
    path.write_bytes(_part(0, b"abcd") + struct.pack("<I", MAGIC)[:3])
    r = MXRecordIO(str(path), "r")
    assert r.read() == b"abcd"
    with pytest.raises(RecordIOError) as e:
        r.read()
    assert str(e.value) == (f"{path}, record #1, byte offset 12: truncated file: a record part header needs "
                            "8 bytes, 3 remain (file is 15 bytes)")
    assert (e.value.path, e.value.offset, e.value.record) == (str(path), 12, "record #1")


def test_truncated_payload_names_length_padding_and_start(tmp_path):
    path = tmp_path / "t.rec"
    path.write_bytes(_part(0, b"12345")[:14])  # 5 bytes + 3 padding, cut after 6 of the 8
    with pytest.raises(RecordIOError) as e:
        MXRecordIO(str(path), "r").read()
    assert str(e.value) == (f"{path}, record #0, byte offset 0: truncated file: record part of 5 bytes "
                            "(+3 padding) starting at byte 8 runs past the end of the file (14 bytes)")


def test_off_boundary_offset_message_says_what_may_be_wrong(tmp_path):
    rec, idx = _rec(tmp_path, [b"x" * 8, b"y"])
    with open(idx, "w") as f:
        f.write("0\t4\n")
    with pytest.raises(RecordIOError, match=r"key 0, byte offset 4: expected RecordIO magic 0xCED7230A, found "
                                            r"other bytes \(corrupted file, or an index offset that is not at a "
                                            r"record boundary\)"):
        MXIndexedRecordIO(idx, rec, "r").read_idx(0)


@pytest.mark.parametrize("second, expect", [
    (1, "2 or 3"),  # a new start inside a split record
    (0, "2 or 3"),  # a whole record inside a split record
])
def test_bad_continuation_names_the_split_records_start(tmp_path, second, expect):
    path = tmp_path / "c.rec"
    lead = _part(0, b"lead")
    path.write_bytes(lead + _part(1, b"abcd") + _part(second, b"ef"))
    r = MXRecordIO(str(path), "r")
    assert r.read() == b"lead"
    with pytest.raises(RecordIOError) as e:
        r.read()
    start = len(lead)
    assert str(e.value) == (f"{path}, record #1, byte offset {start + 12}: bad continuation flag {second}, expected "
                            f"{expect} (continuation of the split record starting at byte {start})")
    assert (e.value.offset, e.value.record) == (start + 12, "record #1")


@pytest.mark.parametrize("cflag", [2, 3, 4, 7])
def test_record_starting_with_a_continuation_flag(tmp_path, cflag):
    path = tmp_path / "c.rec"
    path.write_bytes(_part(cflag, b"abcd"))
    with pytest.raises(RecordIOError) as e:
        MXRecordIO(str(path), "r").read()
    assert str(e.value) == (f"{path}, record #0, byte offset 0: bad continuation flag {cflag}, "
                            "expected 0 or 1 (record start)")


def test_reading_on_after_a_seek_names_no_key(tmp_path):
    """After ``seek(k); read()`` the reader is past key k: a later error must not name k (nor 'key None')."""
    rec, idx = _rec(tmp_path, [b"a" * 4, b"b" * 4, b"c" * 40])
    with open(rec, "r+b") as f:
        f.truncate(os.path.getsize(rec) - 4)
    r = MXIndexedRecordIO(idx, rec, "r")
    r.seek(1)
    assert r.read() == b"b" * 4
    with pytest.raises(RecordIOError) as e:
        r.read()
    assert e.value.record is None and e.value.offset == 24
    assert str(e.value).startswith(f"{rec}, byte offset 24: truncated file")


def test_clone_of_a_reader_whose_file_shrank(tmp_path):
    """A pickled reader reopens lazily and keeps its position; a file now shorter than it is an error."""
    rec, _ = _rec(tmp_path, [b"a" * 8, b"b" * 8, b"c" * 8])
    r = MXRecordIO(rec, "r")
    r.read(), r.read()
    clone = pickle.loads(pickle.dumps(r))
    r.close()
    with open(rec, "r+b") as f:
        f.truncate(20)
    with pytest.raises(RecordIOError) as e:
        clone.read()
    assert str(e.value) == f"{rec}, record #2, byte offset 32: position is past the end of the file (20 bytes)"
    assert (e.value.path, e.value.offset, e.value.record) == (rec, 32, "record #2")
    clone.close()


def test_index_offset_at_the_very_end_of_the_rec(tmp_path):
    rec, idx = _rec(tmp_path, [b"abcd"])
    size = os.path.getsize(rec)
    with open(idx, "w") as f:
        f.write(f"0\t0\n1\t{size}\n")
    r = MXIndexedRecordIO(idx, rec, "r")
    with pytest.raises(RecordIOError) as e:
        r.read_idx(1)
    assert (e.value.path, e.value.offset, e.value.record) == (idx, size, "key 1")
    assert str(e.value).startswith(f"{idx}, key 1, byte offset {size}: key 1 points to byte offset {size}, "
                                   "past the end")


def test_wrong_mode_errors_name_the_file(tmp_path):
    rec, idx = str(tmp_path / "m.rec"), str(tmp_path / "m.idx")
    w = MXIndexedRecordIO(idx, rec, "w")
    with pytest.raises(ValueError) as e:
        w.read()
    assert str(e.value) == f"{rec}: opened for writing ('w'); read() needs 'r'"
    with pytest.raises(ValueError) as e:
        w.seek(0)
    assert str(e.value) == f"{rec}: opened for writing ('w'); seek() needs 'r'"
    with pytest.raises(TypeError) as e:
        pickle.dumps(w)
    assert str(e.value) == f"cannot pickle MXIndexedRecordIO({rec!r}, 'w') while it is open"
    w.close()


# -- the index --------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, line, found", [
    ("0\t0\nx\t12\n", 2, "found another key or offset"),     # a key that is not an int
    ("0\t0\n1\t1.5\n", 2, "found another key or offset"),    # an offset that is not an int
    ("0\t0\n1\t-12\n", 2, "found another key or offset"),    # a negative offset
    ("0\t0\t1\n1\t12\n", 1, "found 3 tab-separated field(s)"),
    ("0\t0\n1 2\t12\n", 2, "found another key or offset"),   # a space is not a separator
    ("1.5\t0\n", 1, "found another key or offset"),
])
def test_bad_int_index_line(tmp_path, text, line, found):
    rec, idx = _rec(tmp_path, [b"a", b"b"])
    with open(idx, "w") as f:
        f.write(text)
    with pytest.raises(RecordIOError) as e:
        MXIndexedRecordIO(idx, rec, "r")
    assert str(e.value) == (f"{idx}: line {line}: expected 'key<TAB>offset' with a int key and a byte offset >= 0, "
                            + found)


def test_index_lines_with_surrounding_whitespace_read_as_mxnet_reads_them(tmp_path):
    """mxnet's reader strips each .idx line before splitting it at tabs: a trailing tab, spaces or CRLF are
    accepted there, so they are here; a third field is still refused naming the line."""
    rec, idx = _rec(tmp_path, [b"a", b"b"])
    with open(idx, "rb") as f:
        first, second = f.read().decode().splitlines()
    with open(idx, "w", newline="") as f:
        f.write(f"{first}\r\n{second}\t\n")
    r = MXIndexedRecordIO(idx, rec, "r")
    assert r.keys == [0, 1] and r.read_idx(1) == b"b" and r.read_idx(0) == b"a"
    r.close()
    with open(idx, "w") as f:
        f.write(f"{first}\n{second}\t7\n")
    with pytest.raises(RecordIOError) as e:
        MXIndexedRecordIO(idx, rec, "r")
    assert e.value.path == idx and "line 2:" in str(e.value) and "found 3 tab-separated field(s)" in str(e.value)


def test_bad_str_index_line(tmp_path):
    rec, idx = _rec(tmp_path, [b"a", b"b"])
    with open(idx, "w") as f:
        f.write("a\t0\nb 12\n")
    with pytest.raises(RecordIOError) as e:
        MXIndexedRecordIO(idx, rec, "r", key_type=str)
    assert str(e.value) == (f"{idx}: line 2: expected 'key<TAB>offset' with a str key and a byte offset >= 0, "
                            "found 1 tab-separated field(s)")


def test_bad_index_line_with_a_key_type_without_a_name(tmp_path):
    rec, idx = _rec(tmp_path, [b"a"])
    with open(idx, "w") as f:
        f.write("zz\t0\n")
    dec_key = functools.partial(int, base=10)  # a key type with no __name__
    with pytest.raises(RecordIOError) as e:
        MXIndexedRecordIO(idx, rec, "r", key_type=dec_key)
    assert f"line 1: expected 'key<TAB>offset' with a {dec_key!r} key and a byte offset >= 0" in str(e.value)


@pytest.mark.parametrize("key_type, text, dup_line, first_line", [
    (int, "5\t0\n5\t8\n", 2, 1),          # every key the same
    (int, "1\t0\n2\t8\n2\t16\n", 3, 2),   # a duplicate that is not the smallest key
    (int, "3\t0\n9\t8\n1\t16\n9\t24\n", 4, 2),
    (str, "a\t0\nb\t8\na\t16\n", 3, 1),
])
def test_duplicate_index_keys(tmp_path, key_type, text, dup_line, first_line):
    rec, idx = _rec(tmp_path, [b"a"] * 4)
    with open(idx, "w") as f:
        f.write(text)
    with pytest.raises(RecordIOError) as e:
        MXIndexedRecordIO(idx, rec, "r", key_type=key_type)
    key = text.split("\n")[dup_line - 1].split("\t")[0]
    assert str(e.value) == (f"{idx}: line {dup_line}: key {key_type(key)!r} is also on line {first_line}; keys must "
                            "be unique (a duplicate would silently replace the record); rebuild the index")


def test_non_utf8_byte_is_placed_on_its_line(tmp_path):
    rec, idx = _rec(tmp_path, [b"a"])
    with open(idx, "wb") as f:
        f.write(b"\n1\t0\n\xff\t8\n2\t16\n3\t24\n")
    with pytest.raises(RecordIOError) as e:
        MXIndexedRecordIO(idx, rec, "r")
    assert str(e.value) == (f"{idx}: line 3: the byte at byte offset 5 is not UTF-8 text; an index holds "
                            "'key<TAB>offset' lines (is this the .rec, or a damaged index? rebuild it)")


def test_str_keys_stay_str_and_are_stripped(tmp_path):
    rec, _ = _rec(tmp_path, [b"a" * 4, b"b" * 4, b"c" * 4])
    idx = str(tmp_path / "s.idx")
    with open(idx, "w") as f:
        f.write("10\t0\n2\t12\n c.jpg\t24\n")  # keys that look like ints are still str keys
    r = MXIndexedRecordIO(idx, rec, "r", key_type=str)
    assert r.keys == ["10", "2", "c.jpg"] and r.read_idx("2") == b"b" * 4 and r.read_idx("c.jpg") == b"c" * 4
    assert "10" in r.idx and 10 not in r.idx


def test_int_keys_beyond_int64_still_load(tmp_path):
    rec, _ = _rec(tmp_path, [b"a" * 4, b"b" * 4])
    idx = str(tmp_path / "big.idx")
    big = 2 ** 70
    with open(idx, "w") as f:
        f.write(f"{big}\t0\n1\t12\n")
    r = MXIndexedRecordIO(idx, rec, "r")
    assert r.keys == [big, 1] and r.read_idx(big) == b"a" * 4 and r.read_idx(1) == b"b" * 4


@pytest.mark.parametrize("keys", [[5, 3], [9, 2, 7, 0, 4], [1, 2, 3]])
def test_int_index_lookups_in_any_key_order(tmp_path, keys):
    payloads = [bytes([65 + i]) * (i + 1) for i in range(len(keys))]
    rec, idx = str(tmp_path / "o.rec"), str(tmp_path / "o.idx")
    with MXIndexedRecordIO(idx, rec, "w") as w:
        for k, p in zip(keys, payloads):
            w.write_idx(k, p)
    r = MXIndexedRecordIO(idx, rec, "r")
    assert isinstance(r.idx, recordio._CompactIndex)  # an int index is held in numpy arrays, not a dict
    assert list(r.keys) == keys and list(r.idx) == keys and len(r.idx) == len(keys)
    assert r.keys[1:3] == keys[1:3] and r.keys[-1] == keys[-1]
    for k, p in sorted(zip(keys, payloads)):
        assert k in r.idx and r.read_idx(k) == p
    assert max(keys) + 1 not in r.idx and -1 not in r.idx
    assert True not in r.idx and "1" not in r.idx and 1.0 not in r.idx
    with pytest.raises(KeyError) as e:
        r.idx[max(keys) + 1]
    assert e.value.args == (max(keys) + 1,)
    with pytest.raises(KeyError) as e:
        r.idx[True]
    assert e.value.args == (True,)
    assert np.asarray(r.keys).tolist() == keys
    r.close()


def _index_file(tmp_path, data):
    path = tmp_path / "raw.idx"
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("data, keys, offsets", [
    (b"", [], []),
    (b"10\t0\n", [10], [0]),
    (b"10\t0", [10], [0]),
    (b"10\t0\n2\t12\n300\t4611686018427387905\n", [10, 2, 300], [0, 12, 2 ** 62 + 1]),
    (b"10\t0\n2\t12\n300\t24", [10, 2, 300], [0, 12, 24]),
    (b"".join(b"%d\t%d\n" % (k, 16 * k) for k in range(40, 0, -1)), list(range(40, 0, -1)),
     [16 * k for k in range(40, 0, -1)]),
])
@pytest.mark.parametrize("chunk", [1, 3, 7, 1 << 18])
def test_int_index_parsed_by_chunks(tmp_path, data, keys, offsets, chunk):
    got = recordio._read_int_index(_index_file(tmp_path, data), chunk=chunk)
    assert got is not None
    assert got.keys.tolist() == keys and got.offsets.tolist() == offsets
    assert got.keys.dtype == np.int64 and got.offsets.dtype == np.int64


@pytest.mark.parametrize("data", [
    b"1\t0\n\t5\n", b"1\t0\n2\n", b"1\t0\t3\n", b"1\t-4\n", b"1 2\t0\n", b"1.5\t0\n", b"1\t0\n\n2\t8\n",
    b"99999999999999999999\t0\n",
])
def test_int_index_not_of_the_simple_form_goes_to_the_line_reader(tmp_path, data):
    assert recordio._read_int_index(_index_file(tmp_path, data), chunk=4) is None


def test_int_index_that_grows_between_the_two_passes(tmp_path, monkeypatch):
    """The index is read twice (count, then parse): lines appended in between send it to the line reader."""
    path = _index_file(tmp_path, b"0\t0\n1\t8\n")

    class Growing:
        def __init__(self):
            self.data, self.pos = b"0\t0\n1\t8\n", 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, n=-1):
            end = len(self.data) if n is None or n < 0 else self.pos + n
            out = self.data[self.pos:end]
            self.pos += len(out)
            return out

        def seek(self, pos):
            self.pos = pos
            self.data += b"2\t16\n"  # appended by another process

    monkeypatch.setattr(recordio, "open_regular", lambda *a, **k: Growing())
    assert recordio._read_int_index(path, chunk=1 << 10) is None


# -- the insightface header record (key 0) ----------------------------------------------------------
def _header(a, b):
    return pack(IRHeader(0, [a, b], 0, 0), b"")


@pytest.mark.parametrize("a, b, keys, rec_size", [
    (1, 1, 1, 32),       # no images, no identities
    (10, 12, 100, 320),  # 10 records of at least 8 + 24 bytes fit in 320 bytes
    (10, 12, 10, 10 ** 6),
    (3, 3, 5, 10 ** 6),
])
def test_check_header_accepts_the_bounds(a, b, keys, rec_size):
    assert check_header(_header(a, b), keys, rec_size, "w") == (a, b)


@pytest.mark.parametrize("a, b, keys, rec_size, declares", [
    (11, 12, 100, 320, "10 images and 1 identities"),
    (11, 12, 10, 10 ** 6, "10 images and 1 identities"),
    (2, 2, 1, 10 ** 6, "1 images and 0 identities"),
    (2, 2, 0, 0, "1 images and 0 identities"),
    (0, 5, 10, 10 ** 6, "-1 images and 5 identities"),
    (5, 4, 10, 10 ** 6, "4 images and -1 identities"),
])
def test_check_header_refuses_out_of_bounds(a, b, keys, rec_size, declares):
    with pytest.raises(ValueError) as e:
        check_header(_header(a, b), keys, rec_size, "the.rec, key 0")
    assert str(e.value) == (f"the.rec, key 0: the header declares {declares}, but the index holds {keys} keys "
                            f"(the .rec {rec_size} bytes): a forged or damaged header")


@pytest.mark.parametrize("a, b", [(2.5, 5.0), (2.0, float("inf")), (float("nan"), 3.0)])
def test_check_header_refuses_fractional_labels(a, b):
    with pytest.raises(ValueError) as e:
        check_header(_header(a, b), 10, 10 ** 6, "h")
    assert str(e.value) == (f"h: the header's labels ({a!r}, {b!r}) are not whole numbers; expected "
                            "[N + 1, N + 1 + K] (N images, K identities)")


@pytest.mark.parametrize("labels, extra", [([3.0], b"img"), ([1.0, 2.0], b"i"), ([1.0, 2.0, 3.0], b"jp")])
def test_check_header_refuses_an_image_with_vector_labels(labels, extra):
    with pytest.raises(ValueError) as e:
        check_header(pack(IRHeader(0, labels, 0, 0), extra), 10, 10 ** 6, "f.rec, key 0")
    assert str(e.value) == (f"f.rec, key 0: an image with {len(labels)} labels (im2rec --pack-label with the first key "
                            "0), which insightface readers (arcface_torch's MXFaceDataset) take for the header record "
                            "and so train on the wrong images; rebuild it with `lh2face data build`, "
                            "or with keys from 1")


def test_check_header_of_other_records():
    assert check_header(b"\0" * 23, 10, 100, "x") is None
    assert check_header(pack((0, 5.0, 0, 0), b""), 10, 100, "x") is None
    with pytest.raises(ValueError, match="says 2 float32 labels"):  # a flag-2 header cut after 24 bytes
        check_header(_header(1, 1)[:24], 10, 100, "x")


def test_read_idx_checks_the_header_record_at_key_0(tmp_path):
    rec, idx = _rec(tmp_path, [_header(1000, 2000), b"x"])
    r = MXIndexedRecordIO(idx, rec, "r")
    with pytest.raises(ValueError) as e:
        r.read_idx(0)
    assert str(e.value).startswith(f"{rec}, key 0 (the header record): the header declares 999 images")
    assert r.read_idx(1) == b"x"


# -- payloads ---------------------------------------------------------------------------------------
def test_unpack_one_label():
    header, rest = unpack(pack((0, [5.0], 7, 8), b"xy"))
    assert header.flag == 1 and header.label.tolist() == [5.0] and rest == b"xy"
    assert header.id == 7 and header.id2 == 8


def test_unpack_short_label_block_message():
    payload = pack((0, [1.0, 2.0, 3.0], 0, 0), b"")[:-4]
    with pytest.raises(ValueError) as e:
        unpack(payload)
    assert str(e.value) == "record header says 3 float32 labels (12 bytes) but only 8 bytes follow the header"


def _grey_png():
    img = (np.arange(48, dtype=np.uint8).reshape(6, 8) * 5)
    return img, images.encode(img, 3, ".png", backend="pillow")


@pytest.mark.parametrize("iscolor, shape", [(1, (6, 8, 3)), (2, (6, 8, 3)), (0, (6, 8)), (-1, (6, 8))])
def test_imdecode_iscolor(iscolor, shape):
    img, png = _grey_png()
    out = imdecode(png, iscolor)
    assert out.shape == shape
    if len(shape) == 2:
        np.testing.assert_array_equal(out, img)
    else:
        np.testing.assert_array_equal(out, np.repeat(img[..., None], 3, axis=2))


def test_codec_follows_image_backend(monkeypatch):
    """``IMAGE_BACKEND`` picks the codec of imencode / pack_img / unpack_img (the two write different PNGs)."""
    img = np.random.default_rng(5).integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    by = {b: images.encode(img, 3, ".png", backend=b) for b in ("cv2", "pillow")}
    assert by["cv2"] != by["pillow"]
    seen = []
    real = images.decode
    monkeypatch.setattr(images, "decode", lambda *a, **k: seen.append(k.get("backend")) or real(*a, **k))
    for backend in ("pillow", "cv2"):
        monkeypatch.setattr(recordio, "IMAGE_BACKEND", backend)
        assert imencode(img, 3, ".png") == by[backend]
        assert pack_img((0, 1.0, 0, 0), img, 3, ".png") == pack((0, 1.0, 0, 0), by[backend])
        np.testing.assert_array_equal(unpack_img(pack_img((0, 1.0, 0, 0), img, 3, ".png"))[1], img)
    assert seen == ["pillow", "cv2"]


def test_imencode_defaults_are_jpeg_quality_95():
    img = np.random.default_rng(6).integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    assert imencode(img)[:3] == b"\xff\xd8\xff"
    assert imencode(img) == imencode(img, 95, ".jpg") != imencode(img, 96, ".jpg")
    assert pack_img((0, 1.0, 0, 0), img) == pack((0, 1.0, 0, 0), imencode(img, 95, ".jpg"))


# -- writing: the index, a full disk, what a commit leaves -------------------------------------------
def test_writer_tracks_keys_offsets_and_refuses_a_rewrite(tmp_path):
    rec, idx = str(tmp_path / "w.rec"), str(tmp_path / "w.idx")
    with MXIndexedRecordIO(idx, rec, "w") as w:
        w.write_idx(0, b"abc")
        w.write_idx("7", b"abcd")
        assert w.keys == [0, 7] and w.idx == {0: 0, 7: 12}
        with pytest.raises(ValueError) as e:
            w.write_idx(7, b"again")
        assert str(e.value) == (f"{idx}: key 7 was already written (record at byte 12); "
                                "keys of an index must be unique")


def test_str_index_is_utf8(tmp_path):
    rec, idx = str(tmp_path / "u.rec"), str(tmp_path / "u.idx")
    with MXIndexedRecordIO(idx, rec, "w", key_type=str) as w:
        w.write_idx("é/ø.jpg", b"a")
    with open(idx, "rb") as f:
        assert f.read() == "é/ø.jpg\t0\n".encode("utf-8")


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("failing, named", [(1, "idx"), (2, "rec")])
def test_full_disk_on_close_names_the_file(tmp_path, monkeypatch, failing, named):
    """The index is flushed first, then the .rec: a failing fsync names the file being flushed."""
    rec, idx = str(tmp_path / "f.rec"), str(tmp_path / "f.idx")
    w = MXIndexedRecordIO(idx, rec, "w")
    w.write_idx(0, b"a")
    calls = []
    real = os.fsync

    def fsync(fd):
        calls.append(fd)
        if len(calls) == failing:
            _enospc()
        return real(fd)

    monkeypatch.setattr(recordio.os, "fsync", fsync)
    held = (w._fh, w.fidx)
    with pytest.raises(OSError) as e:
        w.close()
    monkeypatch.undo()
    assert e.value.errno == errno.ENOSPC and e.value.filename == {"idx": idx, "rec": rec}[named]
    assert all(fh.closed for fh in held) and not w.is_open
    assert os.listdir(tmp_path) == []  # neither target nor any staging file: nothing half-written is left
    w.abort()


def test_full_disk_on_an_index_line_names_the_index(tmp_path):
    rec, idx = str(tmp_path / "f.rec"), str(tmp_path / "f.idx")
    w = MXIndexedRecordIO(idx, rec, "w")
    real = w.fidx

    class Full:
        closed = False

        def write(self, text):
            _enospc()

        def close(self):
            self.closed = True
            real.close()

    w.fidx = Full()
    with pytest.raises(OSError) as e:
        w.write_idx(0, b"a")
    assert e.value.errno == errno.ENOSPC and e.value.filename == idx
    w.abort()


def test_a_failed_rec_rename_does_not_publish_the_index(tmp_path, monkeypatch):
    rec, idx = str(tmp_path / "p.rec"), str(tmp_path / "p.idx")
    w = MXIndexedRecordIO(idx, rec, "w")
    w.write_idx(0, b"a")
    real = os.replace

    def replace(src, dst, *a, **k):
        if os.fspath(dst).endswith(".rec"):
            _enospc()
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        w.close()
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []  # neither target, nor the staged .rec or index


# -- lifecycle: close and abort release what they hold ---------------------------------------------
def test_reader_close_releases_the_file_and_the_mapping(tmp_path):
    rec, idx = _rec(tmp_path, [b"abc"])
    r = MXIndexedRecordIO(idx, rec, "r")
    fh, mapping = r._fh, r._map
    assert repr(r) == f"MXIndexedRecordIO({rec!r}, 'r') [open]"
    r.close()
    assert fh.closed and mapping.closed and not r.is_open
    assert repr(r) == f"MXIndexedRecordIO({rec!r}, 'r') [closed]"
    with pytest.raises(ValueError) as e:
        r.read()
    assert str(e.value) == f"{rec}: operation on a closed MXIndexedRecordIO"
    r.close()


def test_reader_abort_releases_the_file_and_the_mapping(tmp_path):
    rec, _ = _rec(tmp_path, [b"abc"])
    r = MXRecordIO(rec, "r")
    fh, mapping = r._fh, r._map
    r.abort()
    assert fh.closed and mapping.closed and not r.is_open


def test_reader_of_an_empty_file_closes(tmp_path):
    rec = str(tmp_path / "e.rec")
    MXRecordIO(rec, "w").close()
    r = MXRecordIO(rec, "r")
    fh = r._fh
    r.close()
    assert fh.closed


def test_clone_closed_before_any_read(tmp_path):
    rec, idx = _rec(tmp_path, [b"abc"])
    for reader in (MXRecordIO(rec, "r"), MXIndexedRecordIO(idx, rec, "r")):
        clone = pickle.loads(pickle.dumps(reader))
        clone.close()
        clone.abort()
        reader.close()


def test_writer_close_and_abort_release_both_files(tmp_path):
    rec, idx = str(tmp_path / "w.rec"), str(tmp_path / "w.idx")
    w = MXIndexedRecordIO(idx, rec, "w")
    w.write_idx(0, b"a")
    fh, fidx = w._fh, w.fidx
    w.abort()
    assert fh.closed and fidx.closed and not w.is_open and os.listdir(tmp_path) == []
    w.close()  # nothing left to commit
    w.abort()
    assert os.listdir(tmp_path) == []

    w = MXIndexedRecordIO(idx, rec, "w")
    w.write_idx(0, b"a")
    w.close()
    assert not w.is_open
    w.close()  # a second close is a no-op
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del w
        gc.collect()
    assert not [c for c in caught if issubclass(c.category, RuntimeWarning)]  # it was closed: nothing to warn of
    assert MXIndexedRecordIO(idx, rec, "r").read_idx(0) == b"a"


# -- processes --------------------------------------------------------------------------------------
def _in_child(target, *args):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=target, args=(*args, queue))
    child.start()
    out = queue.get(timeout=30)
    child.join(30)
    return out


def _close_writer(writer, queue):
    try:
        writer.close()
        queue.put("closed")
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        queue.put(f"{type(exc).__name__}: {exc}")


def _write_record(writer, queue):
    try:
        writer.write(b"from the child")
        queue.put("written")
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        queue.put(f"{type(exc).__name__}: {exc}")


def _read_next(reader, queue):
    try:
        queue.put(reader.read())
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        queue.put(f"{type(exc).__name__}: {exc}")


def test_forked_child_cannot_close_the_parents_writer(tmp_path):
    rec = str(tmp_path / "k.rec")
    w = MXRecordIO(rec, "w")
    w.write(b"a")
    got = _in_child(_close_writer, w)
    forbidden = f"RuntimeError: {rec}: Forbidden operation in multiple processes " \
                "(a writer belongs to the process that opened it)"
    assert got == forbidden
    assert _in_child(_write_record, w) == forbidden
    w.close()
    assert MXRecordIO(rec, "r").read() == b"a"


def test_forked_sequential_reader_keeps_its_position(tmp_path):
    rec, _ = _rec(tmp_path, [b"first", b"second", b"third"])
    r = MXRecordIO(rec, "r")
    assert r.read() == b"first"
    assert _in_child(_read_next, r) == b"second"
    assert r.read() == b"second"


def _finalize_writer(writer, queue):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        writer.__del__()  # what garbage collection of the inherited copy runs
    queue.put([str(c.message) for c in caught])


def test_writer_finalized_in_a_forked_child_is_left_to_the_parent(tmp_path):
    rec = str(tmp_path / "k.rec")
    w = MXRecordIO(rec, "w")
    w.write(b"kept")
    assert _in_child(_finalize_writer, w) == []
    w.close()
    assert MXRecordIO(rec, "r").read() == b"kept"


# -- write(): mode, size limit, buffers, a full disk -------------------------------------------------
def test_write_on_a_reader_names_the_file(tmp_path):
    rec, _ = _rec(tmp_path, [b"a"])
    r = MXRecordIO(rec, "r")
    with pytest.raises(ValueError) as e:
        r.write(b"x")
    assert str(e.value) == f"{rec}: opened for reading ('r'); write() needs 'w'"
    r.close()


def test_write_size_limit(tmp_path, monkeypatch):
    """A record must be shorter than 2**29 bytes (the 29-bit length field); shown with a smaller limit."""
    assert recordio._LEN_MASK == 2 ** 29 - 1
    rec = str(tmp_path / "l.rec")
    monkeypatch.setattr(recordio, "_LEN_MASK", 15)
    w = MXRecordIO(rec, "w")
    w.write(b"x" * 15)
    with pytest.raises(ValueError) as e:
        w.write(b"y" * 16)
    assert str(e.value) == f"{rec}: record of 16 bytes is too large (RecordIO limit is 15 bytes)"
    w.close()
    monkeypatch.undo()
    assert list(MXRecordIO(rec, "r")) == [b"x" * 15]


def test_write_takes_any_buffer(tmp_path):
    rec = str(tmp_path / "b.rec")
    with MXRecordIO(rec, "w") as w:
        w.write(bytearray(b"abc"))
        w.write(memoryview(b"defgh"))
        w.write(np.frombuffer(b"ijkl", np.uint8))
        assert w.tell() == 12 + 16 + 12
    assert list(MXRecordIO(rec, "r")) == [b"abc", b"defgh", b"ijkl"]


def test_full_disk_on_a_record_names_the_rec(tmp_path):
    rec = str(tmp_path / "f.rec")
    w = MXRecordIO(rec, "w")
    real = w._fh

    class Full:
        closed = False

        def write(self, data):
            _enospc()

        def close(self):
            self.closed = True
            real.close()

    w._fh = Full()
    with pytest.raises(OSError) as e:
        w.write(b"abcd")
    assert e.value.errno == errno.ENOSPC and e.value.filename == rec
    w.abort()
    assert os.listdir(tmp_path) == []


def test_writer_garbage_collected_without_close_warns_the_caller(tmp_path):
    rec = str(tmp_path / "gc.rec")
    w = MXRecordIO(rec, "w")
    w.write(b"abc")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del w
        gc.collect()
    [warning] = caught
    assert warning.category is RuntimeWarning and warning.filename == __file__
    assert str(warning.message) == (f"MXRecordIO({rec!r}, 'w') was garbage-collected without close(); its records "
                                    "were discarded (close() commits the file)")
    assert os.listdir(tmp_path) == []


def test_refused_constructor_leaves_nothing_to_finalize(tmp_path, monkeypatch):
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with pytest.raises(ValueError):
        MXRecordIO(str(tmp_path / "x.rec"), "a")
    with pytest.raises(ValueError):
        MXIndexedRecordIO(str(tmp_path / "x.idx"), str(tmp_path / "x.rec"), "rw")
    gc.collect()
    assert unraisable == []


def test_reader_maps_its_file_once(tmp_path):
    rec, idx = _rec(tmp_path, [b"a", b"b", b"c"])
    r = MXIndexedRecordIO(idx, rec, "r")
    fh, mapping = r._fh, r._map
    assert [r.read(), r.read_idx(2), r.read_idx(0)] == [b"a", b"c", b"a"]
    assert r._fh is fh and r._map is mapping
    r.close()


def test_copy_of_a_reader_whose_file_was_removed(tmp_path):
    rec, _ = _rec(tmp_path, [b"a"])
    r = MXRecordIO(rec, "r")
    clone = pickle.loads(pickle.dumps(r))
    r.close()
    os.unlink(rec)
    with pytest.raises(FileNotFoundError) as e:
        clone.read()
    assert str(e.value) == f"{rec}: RecordIO file not found"
    clone.close()
