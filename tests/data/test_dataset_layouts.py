"""FaceRecordDataset on every RecordIO layout insightface and mxnet's im2rec produce, without mxnet.

The files are written by the package's own writer (``MXIndexedRecordIO`` + ``pack``/``pack_img``) the way
each tool lays them out, and read back record by record through :class:`FaceRecordDataset`:

- insightface: a header record at key 0 (``flag > 0``, empty payload, labels ``[N + 1, N + 1 + K]``), the
  images at keys 1..N with vector labels ``[label, 0]`` (flag 2) or scalar labels, then one id-range record
  per class (keys N + 1 ..);
- im2rec: one record per image at the keys of its .lst file, scalar labels (flag 0) or, with
  ``--pack-label``, vector labels (flag = label width), the first key 0 or not.

A first record with ``flag > 0`` is the insightface header only at key 0: an im2rec file whose first key is
not 0 and whose labels are vectors must not be taken for one; one whose first key is 0 is refused (arcface_torch's
MXFaceDataset takes its first image for the header and trains on the wrong images).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from _helpers_recordio import face_like

from lh2face_plugin.data.dataset import FaceRecordDataset
from lh2face_plugin.data.recordio import IRHeader, MXIndexedRecordIO, pack, pack_img

LABELS = [0, 2, 1, 2, 0, 3]  # label 0 first and last, the last class 3 once


def expected_tensor(bgr):
    return torch.from_numpy(bgr[..., ::-1].copy()).permute(2, 0, 1).float() / 127.5 - 1


def write_insightface(folder, vector_labels):
    rng = np.random.default_rng(1)
    images = [face_like(rng) for _ in LABELS]
    n, k = len(images), max(LABELS) + 1
    rec, idx = str(folder / "train.rec"), str(folder / "train.idx")
    with MXIndexedRecordIO(idx, rec, "w") as w:
        w.write_idx(0, pack(IRHeader(0, [n + 1, n + 1 + k], 0, 0), b""))
        for key, (img, lab) in enumerate(zip(images, LABELS), 1):
            label = [float(lab), 0.0] if vector_labels else float(lab)
            w.write_idx(key, pack_img(IRHeader(0, label, key, 0), img, quality=3, img_fmt=".png"))
        for cls in range(k):
            w.write_idx(n + 1 + cls, pack(IRHeader(0, [1.0, 2.0], 0, 0), b""))
    return rec, list(range(1, n + 1)), images


def write_im2rec(folder, keys, vector_labels):
    rng = np.random.default_rng(2)
    images = [face_like(rng) for _ in LABELS]
    rec, idx = str(folder / "data.rec"), str(folder / "data.idx")
    with MXIndexedRecordIO(idx, rec, "w") as w:
        for key, img, lab in zip(keys, images, LABELS):
            # im2rec --pack-label: the .lst row's labels (here the class and an extra value), flag = their count
            label = [float(lab), 7.5] if vector_labels else float(lab)
            w.write_idx(key, pack_img(IRHeader(0, label, key, 0), img, quality=3, img_fmt=".png"))
    return rec, list(keys), images


LAYOUTS = {
    "insightface-vector-labels": lambda d: write_insightface(d, True),
    "insightface-scalar-labels": lambda d: write_insightface(d, False),
    "im2rec-scalar-first-key-0": lambda d: write_im2rec(d, range(6), False),
    "im2rec-scalar-first-key-1": lambda d: write_im2rec(d, range(1, 7), False),
    "im2rec-scalar-sparse-keys": lambda d: write_im2rec(d, [5, 6, 9, 10, 20, 21], False),
    "im2rec-vector-first-key-1": lambda d: write_im2rec(d, range(1, 7), True),
    "im2rec-vector-sparse-keys": lambda d: write_im2rec(d, [3, 4, 8, 11, 12, 30], True),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_record_reads_back_with_its_label(tmp_path, layout):
    rec, keys, images = LAYOUTS[layout](tmp_path)
    ds = FaceRecordDataset(rec, random_flip=False)
    assert len(ds) == len(LABELS), layout
    assert [int(k) for k in ds.imgidx] == keys
    assert ds.num_classes == (4 if layout.startswith("insightface") else None)
    for i, (img, lab) in enumerate(zip(images, LABELS)):
        x, y = ds[i]
        assert y.dtype == torch.int64 and y.item() == lab, (layout, i)
        torch.testing.assert_close(x, expected_tensor(img), atol=1e-6, rtol=0)


def test_header_detection_needs_key_0(tmp_path):
    """The im2rec vector-label file's first record has flag 2, like a header, but sits at key 1."""
    rec, keys, _ = write_im2rec(tmp_path, range(1, 7), True)
    ds = FaceRecordDataset(rec, random_flip=False)
    assert ds.header0 is None and ds.num_classes is None
    assert list(ds.imgidx) == keys


def test_an_image_with_vector_labels_at_key_0_is_refused_not_taken_for_the_header(tmp_path):
    rec, _, _ = write_im2rec(tmp_path, range(6), True)
    with pytest.raises(ValueError, match=r"key 0 \(the header record\): an image with 2 labels \(im2rec --pack-label"):
        FaceRecordDataset(rec, random_flip=False)
