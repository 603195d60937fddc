"""Quality degradations (blur, low resolution, noise, JPEG) and the quality score they imply."""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from PIL import Image, ImageFilter

from ...images import decode as decode_image

__all__ = ["Degradation", "HIGH_QUALITY", "STORE_JPEG_QUALITY", "quality_score", "sample_degradation",
           "degradation_with_quality", "degrade", "encode_jpeg"]

HIGH_QUALITY = 0.5
"""Quality threshold: an image (or template) with ``quality >= HIGH_QUALITY`` counts as high quality."""
STORE_JPEG_QUALITY = 95
"""JPEG quality images are stored with (unless their degradation is a JPEG of its own)."""


@dataclass(frozen=True)
class Degradation:
    """Quality degradations, applied in this order.

    Attributes:
        blur: Gaussian blur radius in pixels (0 = none).
        scale: downscale factor before upscaling back with bilinear interpolation (1 = none).
        noise: standard deviation of additive Gaussian noise in 8-bit levels (0 = none).
        jpeg: JPEG quality the image is compressed with (None = none).
    """

    blur: float = 0.0
    scale: float = 1.0
    noise: float = 0.0
    jpeg: Optional[int] = None


def quality_score(deg: Optional[Degradation]) -> float:
    """Quality in (0, 1], 1 for no degradation.

    ``q = exp(-(blur / 2 + (scale - 1) / 1.5 + noise / 12 + max(0, 90 - jpeg) / 60))``.
    """
    if deg is None:
        return 1.0
    jpeg = 0.0 if deg.jpeg is None else max(0.0, 90.0 - deg.jpeg) / 60.0
    return float(math.exp(-(deg.blur / 2.0 + (deg.scale - 1.0) / 1.5 + deg.noise / 12.0 + jpeg)))


def sample_degradation(rng: np.random.Generator, pristine: float = 0.4) -> Optional[Degradation]:
    """A random degradation (``None``, pristine, with probability ``pristine``)."""
    if rng.random() < pristine:
        return None
    on = rng.random(4) < 0.5
    if not on.any():
        on[rng.integers(4)] = True
    return Degradation(
        blur=float(rng.uniform(0.5, 2.5)) if on[0] else 0.0,
        scale=float(rng.uniform(1.5, 4.0)) if on[1] else 1.0,
        noise=float(rng.uniform(2.0, 15.0)) if on[2] else 0.0,
        jpeg=int(rng.integers(10, 61)) if on[3] else None,
    )


def encode_jpeg(img: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of a uint8 RGB image."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def degrade(img: np.ndarray, deg: Optional[Degradation], noise_seed: int,
            encode: bool = True) -> Tuple[np.ndarray, bytes]:
    """Apply ``deg`` to a uint8 (S, S, 3) image; returns the result and (with ``encode``) its JPEG bytes."""
    if deg is None:
        return img, encode_jpeg(img, STORE_JPEG_QUALITY) if encode else b""
    pil = Image.fromarray(img)
    if deg.blur > 0:
        pil = pil.filter(ImageFilter.GaussianBlur(deg.blur))
    if deg.scale > 1:
        w, h = pil.size
        small = (max(1, int(round(w / deg.scale))), max(1, int(round(h / deg.scale))))
        pil = pil.resize(small, Image.BILINEAR).resize((w, h), Image.BILINEAR)
    out = np.asarray(pil)
    if deg.noise > 0:
        noise = np.random.default_rng(noise_seed).normal(0.0, deg.noise, out.shape)
        out = np.clip(np.rint(out + noise), 0, 255).astype(np.uint8)
    if not encode and deg.jpeg is None:
        return np.ascontiguousarray(out), b""
    data = encode_jpeg(out, STORE_JPEG_QUALITY if deg.jpeg is None else deg.jpeg)
    if deg.jpeg is not None:
        out = decode_image(data, "rgb", where="synthetic JPEG", backend="pillow")
    return np.ascontiguousarray(out), data


def degradation_with_quality(rng: np.random.Generator, high: Optional[bool], tries: int = 50) -> Optional[Degradation]:
    """A random degradation whose quality is high (>= HIGH_QUALITY), low, or either (``None``)."""
    for _ in range(tries):
        d = sample_degradation(rng, pristine=0.4 if high else 0.0)
        if high is None or (quality_score(d) >= HIGH_QUALITY) == high:
            return d
    return None if high else Degradation(blur=2.0, scale=3.0, noise=10.0, jpeg=20)
