"""Small generated datasets for the RecordIO / data-tool tests."""
from __future__ import annotations

import os
import struct
from typing import List, Tuple

import numpy as np

from lh2face_plugin.data.recordio import MAGIC, IRHeader, MXIndexedRecordIO, pack, pack_img

MAGIC_BYTES = struct.pack("<I", MAGIC)


def face_like(rng: np.random.Generator, size: int = 112) -> np.ndarray:
    """A (size, size, 3) uint8 BGR image with structure (gradients + noise), not a flat colour."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = np.stack([yy, xx, (xx + yy) / 2], axis=-1) * rng.uniform(80, 200, size=3)
    noise = rng.integers(0, 40, size=(size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def write_insightface_rec(folder: str, images_per_class: List[int], seed: int = 0,
                          img_fmt: str = ".png") -> Tuple[str, str, List[np.ndarray], List[int]]:
    """Write ``folder/train.rec/.idx`` in insightface layout; returns paths, BGR images and labels."""
    rng = np.random.default_rng(seed)
    rec, idx = os.path.join(folder, "train.rec"), os.path.join(folder, "train.idx")
    images, labels = [], []
    for cls, count in enumerate(images_per_class):
        for _ in range(count):
            images.append(face_like(rng))
            labels.append(cls)
    n, k = len(images), len(images_per_class)
    with MXIndexedRecordIO(idx, rec, "w") as w:
        w.write_idx(0, pack(IRHeader(0, [n + 1, n + 1 + k], 0, 0), b""))
        for i, (img, lab) in enumerate(zip(images, labels), 1):
            w.write_idx(i, pack_img(IRHeader(0, [lab, 0], i, 0), img, quality=3, img_fmt=img_fmt))
        first = 1
        for cls, count in enumerate(images_per_class):
            w.write_idx(n + 1 + cls, pack(IRHeader(0, [first, first + count], 0, 0), b""))
            first += count
    return rec, idx, images, labels


def payloads_with_magic(rng: np.random.Generator, count: int) -> List[bytes]:
    """Payloads of varied lengths, many holding the magic number at aligned and unaligned offsets."""
    out = [b"", MAGIC_BYTES, MAGIC_BYTES * 3, b"ab" + MAGIC_BYTES + b"cd", MAGIC_BYTES + b"x"]
    for _ in range(count):
        n = int(rng.integers(0, 300))
        buf = bytearray(rng.integers(0, 256, size=n, dtype=np.uint8).tobytes())
        for _ in range(int(rng.integers(0, 4))):
            if n >= 4:
                at = int(rng.integers(0, n - 3))
                buf[at:at + 4] = MAGIC_BYTES
        out.append(bytes(buf))
    return out
