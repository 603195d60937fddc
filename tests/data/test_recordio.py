"""lh2face_plugin.data.recordio: golden bytes, round trips, bad input, atomic writes, processes."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from _helpers_recordio import MAGIC_BYTES, payloads_with_magic, write_insightface_rec
from lh2face_plugin.data import recordio
from lh2face_plugin.data.dataset import FaceRecordDataset
from lh2face_plugin.data.recordio import (IRHeader, MXIndexedRecordIO, MXRecordIO, RecordIOError, pack,
                                          pack_img, unpack, unpack_img)

H = bytes.fromhex


def _write(path, payloads):
    with MXRecordIO(path, "w") as w:
        for p in payloads:
            w.write(p)
    with open(path, "rb") as f:
        return f.read()


# -- golden bytes (worked out by hand from the format in the module docstring) ----------------
@pytest.mark.parametrize("payload, expected", [
    (b"", "0a23d7ce 00000000"),
    (b"abc", "0a23d7ce 03000000 616263 00"),
    (b"abcd", "0a23d7ce 04000000 61626364"),
    # magic at an unaligned offset stays inside the record
    (b"ab" + MAGIC_BYTES + b"cd", "0a23d7ce 08000000 6162 0a23d7ce 6364"),
    # aligned magic: split into cflag 1 (first, 4 bytes) and cflag 3 (last, 3 bytes + 1 pad)
    (b"abcd" + MAGIC_BYTES + b"efg", "0a23d7ce 04000020 61626364 0a23d7ce 03000060 656667 00"),
    # a payload that is only the magic: two empty parts
    (MAGIC_BYTES, "0a23d7ce 00000020 0a23d7ce 00000060"),
    # three parts: cflag 1, 2, 3
    (MAGIC_BYTES + b"wxyz" + MAGIC_BYTES + b"q",
     "0a23d7ce 00000020 0a23d7ce 04000040 7778797a 0a23d7ce 01000060 71 000000"),
])
def test_golden_record_bytes(tmp_path, payload, expected):
    path = str(tmp_path / "g.rec")
    assert _write(path, [payload]) == H(expected)
    with MXRecordIO(path, "r") as r:
        assert r.read() == payload
        assert r.read() is None


def test_golden_pack_headers():
    # flag>0: flag=2, header label 0.0, id=3, id2=4, then float32 1.0 and 2.0
    got = pack(IRHeader(0, [1.0, 2.0], 3, 4), b"img")
    assert got == H("02000000 00000000 0300000000000000 0400000000000000 0000803f 00000040 696d67")
    # scalar label: flag forced to 0, 7.0 = 0x40e00000
    assert pack(IRHeader(9, 7.0, 5, 0), b"") == H("00000000 0000e040 0500000000000000 0000000000000000")
    header, rest = unpack(got)
    assert header.flag == 2 and header.id == 3 and header.id2 == 4 and rest == b"img"
    assert header.label.dtype == np.float32 and header.label.tolist() == [1.0, 2.0]
    header, rest = unpack(H("00000000 0000e040 0500000000000000 0000000000000000"))
    assert header == IRHeader(0, 7.0, 5, 0) and rest == b""


def test_golden_index_text(tmp_path):
    rec, idx = str(tmp_path / "x.rec"), str(tmp_path / "x.idx")
    with MXIndexedRecordIO(idx, rec, "w") as w:
        for key, payload in [(0, b"abc"), (7, b"abcd" + MAGIC_BYTES + b"efg"), (2, b"")]:
            w.write_idx(key, payload)
        assert w.tell() == 12 + 24 + 8
    with open(idx) as f:
        assert f.read() == "0\t0\n7\t12\n2\t36\n"


# -- round trips --------------------------------------------------------------------------------
def test_round_trip_sequential_and_indexed(tmp_path):
    payloads = payloads_with_magic(np.random.default_rng(0), 200)
    rec, idx = str(tmp_path / "r.rec"), str(tmp_path / "r.idx")
    with MXIndexedRecordIO(idx, rec, "w") as w:
        for i, p in enumerate(payloads):
            w.write_idx(i, p)
    with MXRecordIO(rec, "r") as r:
        assert list(r) == payloads
        r.reset()
        assert r.read() == payloads[0]
    r = MXIndexedRecordIO(idx, rec, "r")
    assert r.keys == list(range(len(payloads)))
    order = np.random.default_rng(1).permutation(len(payloads))
    assert [r.read_idx(int(k)) for k in order] == [payloads[k] for k in order]
    r.seek(5)
    assert [r.read(), r.read()] == payloads[5:7]
    r.close()


def test_string_keys(tmp_path):
    rec, idx = str(tmp_path / "s.rec"), str(tmp_path / "s.idx")
    with MXIndexedRecordIO(idx, rec, "w", key_type=str) as w:
        w.write_idx("a/b.jpg", b"1")
        w.write_idx("c.jpg", b"22")
    with MXIndexedRecordIO(idx, rec, "r", key_type=str) as r:
        assert r.keys == ["a/b.jpg", "c.jpg"] and r.read_idx("c.jpg") == b"22"


def test_label_layouts():
    arr = np.arange(6, dtype=np.float64).reshape(2, 3)
    header, _ = unpack(pack(IRHeader(0, arr, 1, 2), b""))
    assert header.flag == 6 and header.label.tolist() == list(range(6))
    header, _ = unpack(pack((0, np.float32(3.5), 0, 0), b"z"))
    assert header.flag == 0 and header.label == 3.5


@pytest.mark.parametrize("backend", ["cv2", "pillow"])
def test_pack_img_bgr_convention(monkeypatch, backend):
    monkeypatch.setattr(recordio, "IMAGE_BACKEND", backend)
    img = np.zeros((8, 10, 3), np.uint8)
    img[..., 0] = 255  # blue in BGR
    header, out = unpack_img(pack_img((0, 4.0, 1, 0), img, img_fmt=".png"))
    assert header.label == 4.0 and out.shape == (8, 10, 3)
    np.testing.assert_array_equal(out, img)
    _, grey = unpack_img(pack_img((0, 0.0, 0, 0), img, img_fmt=".png"), iscolor=0)
    assert grey.shape == (8, 10)
    _, jpg = unpack_img(pack_img((0, 0.0, 0, 0), img, quality=95), iscolor=1)
    assert jpg.shape == (8, 10, 3) and jpg[..., 0].mean() > 200 and jpg[..., 2].mean() < 50


def test_codecs_read_each_other(monkeypatch):
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, size=(16, 12, 3), dtype=np.uint8)
    monkeypatch.setattr(recordio, "IMAGE_BACKEND", "cv2")
    by_cv2 = pack_img((0, 1.0, 0, 0), img, img_fmt=".png")
    monkeypatch.setattr(recordio, "IMAGE_BACKEND", "pillow")
    by_pil = pack_img((0, 1.0, 0, 0), img, img_fmt=".png")
    np.testing.assert_array_equal(unpack_img(by_cv2)[1], img)
    monkeypatch.setattr(recordio, "IMAGE_BACKEND", "cv2")
    np.testing.assert_array_equal(unpack_img(by_pil)[1], img)


def test_undecodable_image_raises():
    with pytest.raises(ValueError, match="record image: not an image format the package knows; only JPEG and PNG"):
        unpack_img(pack((0, 0.0, 0, 0), b"nope!"))


# -- bad input ------------------------------------------------------------------------------------
@pytest.fixture
def small_rec(tmp_path):
    rec, idx = str(tmp_path / "b.rec"), str(tmp_path / "b.idx")
    payloads = [b"x" * 10, b"abcd" + MAGIC_BYTES + b"efgh", b"y" * 20]
    with MXIndexedRecordIO(idx, rec, "w") as w:
        for i, p in enumerate(payloads):
            w.write_idx(i, p)
    offsets = MXIndexedRecordIO(idx, rec, "r").idx
    return rec, idx, payloads, offsets


def test_truncated_rec_names_file_record_offset(small_rec):
    rec, idx, _, offsets = small_rec
    size = os.path.getsize(rec)
    with open(rec, "r+b") as f:
        f.truncate(size - 5)
    r = MXIndexedRecordIO(idx, rec, "r")
    assert r.read_idx(1) is not None
    with pytest.raises(RecordIOError, match=rf"b\.rec, key 2, byte offset {offsets[2]}: truncated") as e:
        r.read_idx(2)
    assert e.value.offset == offsets[2] and e.value.path == rec
    seq = MXRecordIO(rec, "r")
    seq.read(), seq.read()
    with pytest.raises(RecordIOError, match=r"record #2"):
        seq.read()


def test_truncated_inside_split_record(small_rec):
    rec, idx, _, offsets = small_rec
    with open(rec, "r+b") as f:
        f.truncate(offsets[1] + 8 + 4 + 6)  # first part + half of the second part's header
    with pytest.raises(RecordIOError, match=rf"key 1, byte offset {offsets[1] + 12}: truncated"):
        MXIndexedRecordIO(idx, rec, "r").read_idx(1)


def test_corrupted_magic(small_rec):
    rec, idx, _, offsets = small_rec
    with open(rec, "r+b") as f:
        f.seek(offsets[2])
        f.write(b"\xff")
    with pytest.raises(RecordIOError, match=rf"key 2, byte offset {offsets[2]}: expected RecordIO magic"):
        MXIndexedRecordIO(idx, rec, "r").read_idx(2)


def test_index_off_record_boundary_and_past_end(small_rec, tmp_path):
    rec, idx, _, offsets = small_rec
    size = os.path.getsize(rec)
    with open(idx, "w") as f:
        f.write(f"0\t{offsets[0] + 4}\n1\t{size + 100}\n")
    r = MXIndexedRecordIO(idx, rec, "r")
    with pytest.raises(RecordIOError, match="expected RecordIO magic"):
        r.read_idx(0)
    with pytest.raises(RecordIOError, match=rf"b\.idx.*key 1 points to byte offset {size + 100}, past the end"):
        r.read_idx(1)
    with pytest.raises(KeyError, match="key 5 is not in"):
        r.read_idx(5)


def test_continuation_without_start(small_rec):
    rec, idx, _, offsets = small_rec
    with open(idx, "w") as f:
        f.write(f"0\t{offsets[1] + 12}\n")  # the cflag-3 part of record 1
    with pytest.raises(RecordIOError, match="bad continuation flag 3"):
        MXIndexedRecordIO(idx, rec, "r").read_idx(0)


def test_missing_and_malformed_index(small_rec):
    rec, idx, _, _ = small_rec
    os.unlink(idx)
    with pytest.raises(FileNotFoundError, match=r"b\.idx: index file for .*b\.rec not found"):
        MXIndexedRecordIO(idx, rec, "r")
    with open(idx, "w") as f:
        f.write("0\t0\n1 12\n")
    with pytest.raises(RecordIOError, match=r"b\.idx: line 2: expected 'key<TAB>offset'"):
        MXIndexedRecordIO(idx, rec, "r")
    with pytest.raises(FileNotFoundError, match="nothing.rec: RecordIO file not found"):
        MXRecordIO(rec.replace("b.rec", "nothing.rec"), "r")


def test_bad_payloads():
    with pytest.raises(ValueError, match="shorter than the 24-byte IRHeader"):
        unpack(b"\0" * 10)
    with pytest.raises(ValueError, match="says 3 float32 labels"):
        unpack(pack((0, [1.0, 2.0, 3.0], 0, 0), b"")[:-4])
    with pytest.raises(ValueError, match="Invalid flag 'a'"):
        MXRecordIO("x.rec", "a")


# -- atomic writes ------------------------------------------------------------------------------
def test_write_is_atomic(tmp_path):
    rec, idx = str(tmp_path / "a.rec"), str(tmp_path / "a.idx")
    w = MXIndexedRecordIO(idx, rec, "w")
    w.write_idx(0, b"hello")
    assert not os.path.exists(rec) and not os.path.exists(idx)
    w.close()
    assert MXIndexedRecordIO(idx, rec, "r").read_idx(0) == b"hello"
    with pytest.raises(RuntimeError, match="interrupted"):
        with MXIndexedRecordIO(idx, rec, "w") as w2:
            w2.write_idx(0, b"half")
            raise RuntimeError("interrupted")
    assert MXIndexedRecordIO(idx, rec, "r").read_idx(0) == b"hello"
    assert sorted(os.listdir(tmp_path)) == ["a.idx", "a.rec"]


# -- processes ----------------------------------------------------------------------------------
def test_pickled_reader_reopens(small_rec):
    rec, idx, payloads, _ = small_rec
    r = MXIndexedRecordIO(idx, rec, "r")
    r.read_idx(0)
    clone = pickle.loads(pickle.dumps(r))
    assert clone.read_idx(1) == payloads[1] and r.read_idx(2) == payloads[2]
    w = MXRecordIO(str(os.path.dirname(rec)) + "/w.rec", "w")
    with pytest.raises(TypeError, match="cannot pickle"):
        pickle.dumps(w)
    w.abort()


def _read_in_child(reader, key, queue):
    payload = reader.read_idx(key)
    queue.put((payload, reader.pid == os.getpid()))


def test_forked_reader_maps_the_file_itself(small_rec):
    import multiprocessing

    rec, idx, payloads, _ = small_rec
    r = MXIndexedRecordIO(idx, rec, "r")
    r.read_idx(0)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(r, 1, queue))  # inherited, not pickled
    child.start()
    payload, own_pid = queue.get(timeout=30)
    child.join(30)
    assert payload == payloads[1] and own_pid
    assert r.pid == os.getpid() and r.read_idx(2) == payloads[2]


def test_dataset_with_two_workers(tmp_path):
    rec, _, images, labels = write_insightface_rec(str(tmp_path), [3, 2, 4])
    ds = FaceRecordDataset(str(tmp_path), random_flip=False)
    assert len(ds) == 9 and ds.num_classes == 3
    first, _ = ds[0]  # map the file in the parent before the workers fork
    loader = DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    got_x, got_y = zip(*loader)
    x, y = torch.cat(got_x), torch.cat(got_y)
    assert x.shape == (9, 3, 112, 112) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert y.tolist() == labels
    expected = torch.from_numpy(np.stack(images)[..., ::-1].copy()).permute(0, 3, 1, 2).float() / 127.5 - 1
    torch.testing.assert_close(x, expected, atol=1e-6, rtol=0)
    assert x.min() >= -1 and x.max() <= 1


def test_dataset_flip_and_im2rec_layout(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(112, 112, 3), dtype=np.uint8)
    rec, idx = str(tmp_path / "im2rec.rec"), str(tmp_path / "im2rec.idx")
    with MXIndexedRecordIO(idx, rec, "w") as w:
        for k in (4, 9):
            w.write_idx(k, pack_img(IRHeader(0, float(k), k, 0), img, img_fmt=".png"))
    ds = FaceRecordDataset(rec, random_flip=True)
    assert ds.num_classes is None and len(ds) == 2
    torch.manual_seed(0)
    seen = {tuple(ds[0][0][0, 0, :2].tolist()) for _ in range(20)}
    assert len(seen) == 2  # both orientations drawn
    assert ds[1][1].item() == 9


def test_reader_errors_never_show_the_files_bytes(tmp_path):
    """A file that is not RecordIO (a password file, say) is named, its content never shown."""
    secret = tmp_path / "shadow.rec"
    secret.write_bytes(b"zq9K:$6$s3cr3t:19000:0:99999:7:::\n" * 3)
    (tmp_path / "shadow.idx").write_bytes(b"0\t0\nzq9K:s3cr3t\n")
    with pytest.raises(RecordIOError) as err:
        MXRecordIO(str(secret), "r").read()
    with pytest.raises(RecordIOError) as err_idx:
        MXIndexedRecordIO(str(tmp_path / "shadow.idx"), str(secret), "r")
    for text in (str(err.value), str(err_idx.value)):
        assert "zq9K" not in text and "s3cr3t" not in text and b"zq9K".hex() not in text.lower(), text
        assert b"zq9K"[::-1].hex() not in text.lower(), text  # nor as a little-endian number
