"""Loose crops: an aligned face placed into a larger, rotated, shifted image (as IJB's ``loose_crop``)."""
from __future__ import annotations

import io
from typing import Tuple

import numpy as np
from PIL import Image

from .quality import STORE_JPEG_QUALITY

__all__ = ["loose_crop"]


def loose_crop(img: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator) -> Tuple[bytes, np.ndarray]:
    """Place an aligned face into a larger, rotated, shifted loose crop (JPEG) and move its landmarks."""
    size = img.shape[0]
    s = rng.uniform(1.1, 1.8)
    angle = np.deg2rad(rng.uniform(-12, 12))
    side = int(round(size * s * rng.uniform(1.3, 1.6)))
    centre = side / 2.0 + rng.uniform(-0.05, 0.05, 2) * side
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    fwd = s * rot
    mid = (size - 1) / 2.0
    shift = centre - fwd @ np.array([mid, mid])
    inv = np.linalg.inv(fwd)
    inv_shift = -inv @ shift
    # PIL samples with pixel centres at i + 0.5; our coordinates put them at i
    c = inv_shift + 0.5 - inv @ np.array([0.5, 0.5])
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]]).mean(0)
    crop = Image.fromarray(img).transform(
        (side, side), Image.AFFINE, (inv[0, 0], inv[0, 1], c[0], inv[1, 0], inv[1, 1], c[1]),
        resample=Image.BILINEAR, fillcolor=tuple(int(v) for v in border))
    buf = io.BytesIO()
    crop.save(buf, format="JPEG", quality=STORE_JPEG_QUALITY)
    return buf.getvalue(), (landmarks @ fwd.T + shift).astype(np.float32)
