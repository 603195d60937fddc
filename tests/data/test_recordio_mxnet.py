"""Cross-check lh2face_plugin.data.recordio against the real mxnet 1.9.1 (``tox -e mxnet``)."""
from __future__ import annotations

import numpy as np
import pytest

from _helpers_mxnet import real_mxnet
from _helpers_recordio import MAGIC_BYTES, face_like, payloads_with_magic
from lh2face_plugin.data import recordio as ours

pytestmark = pytest.mark.mxnet
mx = real_mxnet()


def _payloads():
    return payloads_with_magic(np.random.default_rng(7), 300) + [MAGIC_BYTES * 64, b"z" * 100_003]


def _files(tmp_path, name):
    return str(tmp_path / f"{name}.idx"), str(tmp_path / f"{name}.rec")


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def test_written_files_are_byte_identical(tmp_path):
    payloads = _payloads()
    mx_idx, mx_rec = _files(tmp_path, "mx")
    our_idx, our_rec = _files(tmp_path, "ours")
    w = mx.recordio.MXIndexedRecordIO(mx_idx, mx_rec, "w")
    o = ours.MXIndexedRecordIO(our_idx, our_rec, "w")
    for i, p in enumerate(payloads):
        w.write_idx(i, p)
        o.write_idx(i, p)
        assert o.tell() == w.tell()
    w.close()
    o.close()
    assert _read(our_rec) == _read(mx_rec)
    assert _read(our_idx) == _read(mx_idx)
    assert _read(mx_rec).count(MAGIC_BYTES) > 2 * len(payloads)  # split records were exercised


def test_we_read_what_mxnet_writes(tmp_path):
    payloads = _payloads()
    idx, rec = _files(tmp_path, "mx")
    w = mx.recordio.MXIndexedRecordIO(idx, rec, "w")
    for i, p in enumerate(payloads):
        w.write_idx(i, p)
    w.close()
    with ours.MXRecordIO(rec, "r") as r:
        assert list(r) == payloads
    r = ours.MXIndexedRecordIO(idx, rec, "r")
    order = np.random.default_rng(0).permutation(len(payloads))
    assert [r.read_idx(int(k)) for k in order] == [payloads[k] for k in order]


def test_mxnet_reads_what_we_write(tmp_path):
    payloads = _payloads()
    idx, rec = _files(tmp_path, "ours")
    with ours.MXIndexedRecordIO(idx, rec, "w") as w:
        for i, p in enumerate(payloads):
            w.write_idx(i, p)
    seq = mx.recordio.MXRecordIO(rec, "r")
    got = []
    while (item := seq.read()) is not None:
        got.append(item)
    seq.close()
    assert got == payloads
    r = mx.recordio.MXIndexedRecordIO(idx, rec, "r")
    order = np.random.default_rng(1).permutation(len(payloads))
    assert [r.read_idx(int(k)) for k in order] == [payloads[k] for k in order]
    r.close()


@pytest.mark.parametrize("header", [
    (0, 3.0, 11, 12),
    (5, 7.5, 0, 0),                         # flag ignored for a scalar label
    (0, [2.0, 0.0], 1, 0),                  # insightface image record
    (0, np.arange(5, dtype=np.float64), 2**40, 3),
    (0, [], 0, 0),
])
def test_pack_unpack_match(header):
    body = b"payload" + MAGIC_BYTES
    theirs = mx.recordio.pack(mx.recordio.IRHeader(*header), body)
    assert ours.pack(ours.IRHeader(*header), body) == theirs
    h_mx, rest_mx = mx.recordio.unpack(theirs)
    h_ours, rest_ours = ours.unpack(theirs)
    assert rest_ours == rest_mx == body
    assert (h_ours.flag, h_ours.id, h_ours.id2) == (h_mx.flag, h_mx.id, h_mx.id2)
    np.testing.assert_array_equal(np.asarray(h_ours.label), np.asarray(h_mx.label))


def test_images_cross_decode(tmp_path):
    bgr = face_like(np.random.default_rng(2), 112)
    s = ours.pack_img((0, [4.0, 0.0], 9, 0), bgr, img_fmt=".png")
    header, payload = mx.recordio.unpack(s)
    rgb = mx.image.imdecode(payload).asnumpy()  # mxnet's decoder returns RGB
    np.testing.assert_array_equal(rgb, bgr[..., ::-1])
    assert header.label.tolist() == [4.0, 0.0]
    try:
        import cv2  # noqa: F401  mxnet's pack_img needs OpenCV
    except ImportError:
        return
    h, img = ours.unpack_img(mx.recordio.pack_img(mx.recordio.IRHeader(0, 1.0, 0, 0), bgr, img_fmt=".png"))
    np.testing.assert_array_equal(img, bgr)


def test_insightface_layout_from_mxnet(tmp_path):
    from lh2face_plugin.data.dataset import FaceRecordDataset

    rng = np.random.default_rng(3)
    images = [face_like(rng) for _ in range(5)]
    labels = [0, 0, 1, 1, 1]
    idx, rec = str(tmp_path / "train.idx"), str(tmp_path / "train.rec")
    w = mx.recordio.MXIndexedRecordIO(idx, rec, "w")
    w.write_idx(0, mx.recordio.pack(mx.recordio.IRHeader(0, [6.0, 8.0], 0, 0), b""))
    for i, (img, lab) in enumerate(zip(images, labels), 1):
        w.write_idx(i, ours.pack_img((0, [float(lab), 0.0], i, 0), img, img_fmt=".png"))
    w.write_idx(6, mx.recordio.pack(mx.recordio.IRHeader(0, [1.0, 3.0], 0, 0), b""))
    w.write_idx(7, mx.recordio.pack(mx.recordio.IRHeader(0, [3.0, 6.0], 0, 0), b""))
    w.close()
    ds = FaceRecordDataset(str(tmp_path), random_flip=False)
    assert len(ds) == 5 and ds.num_classes == 2
    for i in range(5):
        x, y = ds[i]
        assert y.item() == labels[i]
        expected = images[i][..., ::-1].transpose(2, 0, 1).astype(np.float32) / 127.5 - 1
        np.testing.assert_allclose(x.numpy(), expected, atol=1e-6)
