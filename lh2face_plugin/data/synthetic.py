"""Synthetic 3D faces with ground truth: identities, single renders and whole datasets.

Identity lives in a latent vector (:data:`~lh2face_plugin.data.face3d.PARAM_NAMES`: head
shape, brow, eye sockets, nose, cheeks, mouth, chin, skin tone, features and texture);
nuisance is per image: pose, light, expression, background and quality degradations
(blur, low resolution, noise, JPEG). "Hard" identities come in families that share a base
vector and differ by small offsets, so close identity pairs exist at every quality level.

Images are 112x112 RGB aligned like ArcFace's 5-point template at yaw 0; every render comes
with its ground-truth depth (:func:`~lh2face_plugin.data.face3d.depth_from_height`), face
mask, 5 landmarks, canonical frontal image and a quality score.

:func:`generate_dataset` writes a training RecordIO set in insightface's layout, a
verification ``.bin`` in arcface_torch's format, an IJB-style 1:1 template set and a
renderer-evaluation archive, all from one seed.
"""
from __future__ import annotations

import csv
import io
import json
import math
import multiprocessing
import os
import pickle
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageFilter
from tqdm import tqdm

from ..fileio import FolderWriter, cleanup_stale, cleanup_stale_in, read_manifest, verify_manifest
from ..images import decode as decode_image
from . import face3d
from .face3d import EXPRESSION_NAMES, NEUTRAL_LIGHT, NUM_PARAMS, PARAM_NAMES, Light

__all__ = [
    "Identity",
    "Degradation",
    "FaceSample",
    "Light",
    "NEUTRAL_LIGHT",
    "HIGH_QUALITY",
    "make_identities",
    "render_face",
    "render_faces",
    "quality_score",
    "generate_dataset",
]

FORMAT_VERSION = 2  # 2: scalar image labels (flag 0), readable by arcface_torch
HIGH_QUALITY = 0.5
"""Quality threshold: an image (or template) with ``quality >= HIGH_QUALITY`` counts as high quality."""
STORE_JPEG_QUALITY = 95
_STREAM_TRAIN_IDS, _STREAM_EVAL_IDS, _STREAM_TRAIN, _STREAM_VERIFY, _STREAM_IJB, _STREAM_RENDER = range(6)
_MAX_IJB_PAIRS = 50_000


# --------------------------------------------------------------------------- identities
@dataclass(frozen=True, eq=False)
class Identity:
    """One synthetic person.

    Attributes:
        index: position in the list returned by :func:`make_identities` (the class label).
        family: family id; members of a family share a base parameter vector.
        hard: True when the family has more than one member (close look-alikes exist).
        params: (NUM_PARAMS,) float32 latent vector, entries named by ``PARAM_NAMES``.
    """

    index: int
    family: int
    hard: bool
    params: np.ndarray

    def named_params(self) -> Dict[str, float]:
        """``{name: value}`` view of :attr:`params`."""
        return {name: float(v) for name, v in zip(PARAM_NAMES, self.params)}


def _identities(num: int, seed: int, stream: int, family_size: int, hard_fraction: float,
                family_spread: float) -> List[Identity]:
    if num < 0:
        raise ValueError(f"num must be >= 0, got {num}")
    if family_size < 2:
        raise ValueError(f"family_size must be >= 2, got {family_size}")
    if not 0.0 <= hard_fraction <= 1.0:
        raise ValueError(f"hard_fraction must be in [0, 1], got {hard_fraction}")
    rng = np.random.default_rng([seed, stream])
    n_hard = int(round(num * hard_fraction))
    sizes = [family_size] * (n_hard // family_size)
    if n_hard % family_size >= 2:
        sizes.append(n_hard % family_size)
    sizes += [1] * (num - sum(sizes))
    sizes = [sizes[i] for i in rng.permutation(len(sizes))]
    out: List[Identity] = []
    for fam, size in enumerate(sizes):
        base = rng.standard_normal(NUM_PARAMS)
        for _ in range(size):
            p = base if size == 1 else base + family_spread * rng.standard_normal(NUM_PARAMS)
            out.append(Identity(len(out), fam, size > 1, p.astype(np.float32)))
    return out


def make_identities(num: int, seed: int = 0, *, family_size: int = 3, hard_fraction: float = 0.5,
                    family_spread: float = 0.35) -> List[Identity]:
    """Deterministic list of ``num`` identities.

    A fraction ``hard_fraction`` of them is grouped into families of ``family_size``
    members, ``params = base + family_spread * eps`` with ``base, eps ~ N(0, I)``; the rest
    are singletons with ``params = base``. Members of a family are therefore about
    ``family_spread`` times as far apart in parameter space as unrelated identities.

    Args:
        num: number of identities.
        seed: random seed; the same seed gives the same identities.
        family_size: members per hard family (a last smaller family may occur).
        hard_fraction: fraction of identities that belong to a hard family.
        family_spread: standard deviation of a member's offset from its family base.

    Returns:
        list of :class:`Identity`, ``index`` = position.
    """
    return _identities(num, seed, _STREAM_TRAIN_IDS, family_size, hard_fraction, family_spread)


# --------------------------------------------------------------------------- degradations
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


def _sample_degradation(rng: np.random.Generator, pristine: float = 0.4) -> Optional[Degradation]:
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


def _encode_jpeg(img: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def _degrade(img: np.ndarray, deg: Optional[Degradation], noise_seed: int,
             encode: bool = True) -> Tuple[np.ndarray, bytes]:
    """Apply ``deg`` to a uint8 (S, S, 3) image; returns the result and (with ``encode``) its JPEG bytes."""
    if deg is None:
        return img, _encode_jpeg(img, STORE_JPEG_QUALITY) if encode else b""
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
    data = _encode_jpeg(out, STORE_JPEG_QUALITY if deg.jpeg is None else deg.jpeg)
    if deg.jpeg is not None:
        out = decode_image(data, "rgb", where="synthetic JPEG", backend="pillow")
    return np.ascontiguousarray(out), data


# --------------------------------------------------------------------------- views
_VIEW_FIELDS = ("yaw", "pitch", "roll", "expression", "ambient", "diffuse", "direction", "colour",
                "bg_colour", "bg_gradient")


def _random_light(rng: np.random.Generator) -> Light:
    az, el = np.deg2rad(rng.uniform(-70, 70)), np.deg2rad(rng.uniform(-30, 50))
    direction = (math.sin(az) * math.cos(el), -math.sin(el), math.cos(az) * math.cos(el))
    colour = tuple(float(c) for c in np.clip(1.0 + rng.normal(0, 0.06, 3), 0.8, 1.2))
    return Light(float(rng.uniform(0.25, 0.6)), float(rng.uniform(0.35, 0.8)), direction, colour)


def _random_expression(rng: np.random.Generator) -> np.ndarray:
    smile = rng.uniform(0, 1) * (rng.random() < 0.5)
    mouth = rng.uniform(0, 0.8) * (rng.random() < 0.3)
    brow = np.clip(rng.normal(0, 0.5), -1, 1)
    return np.array([smile, mouth, brow], np.float32)


def _random_background(rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    colour = rng.uniform(0.1, 0.9) + rng.normal(0, 0.08, 3)
    angle = rng.uniform(0, 2 * np.pi)
    return np.clip(colour, 0, 1).astype(np.float32), \
        (rng.uniform(0, 0.3) * np.array([np.cos(angle), np.sin(angle)])).astype(np.float32)


class _Views:
    """Column store of per-image nuisance parameters (one row per image)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.ident = np.zeros(n, np.int64)
        self.yaw = np.zeros(n)
        self.pitch = np.zeros(n)
        self.roll = np.zeros(n)
        self.expression = np.zeros((n, len(EXPRESSION_NAMES)), np.float32)
        self.ambient = np.full(n, NEUTRAL_LIGHT.ambient, np.float32)
        self.diffuse = np.full(n, NEUTRAL_LIGHT.diffuse, np.float32)
        self.direction = np.tile(np.asarray(NEUTRAL_LIGHT.direction, np.float32), (n, 1))
        self.colour = np.ones((n, 3), np.float32)
        self.bg_colour = np.zeros((n, 3), np.float32)
        self.bg_gradient = np.zeros((n, 2), np.float32)
        self.degradation: List[Optional[Degradation]] = [None] * n
        self.noise_seed = np.zeros(n, np.int64)

    def set_light(self, i: int, light: Light) -> None:
        self.ambient[i], self.diffuse[i] = light.ambient, light.diffuse
        self.direction[i], self.colour[i] = light.direction, light.colour

    def light(self, i: int) -> Light:
        return Light(float(self.ambient[i]), float(self.diffuse[i]),
                     tuple(float(v) for v in self.direction[i]), tuple(float(v) for v in self.colour[i]))

    def randomise(self, i: int, rng: np.random.Generator, *, max_yaw: float = 60.0,
                  roll_std: float = 3.0, degrade: bool = True) -> None:
        self.yaw[i] = np.clip(rng.normal(0, 22), -max_yaw, max_yaw)
        self.pitch[i] = np.clip(rng.normal(0, 8), -20, 20)
        self.roll[i] = np.clip(rng.normal(0, roll_std), -3 * roll_std, 3 * roll_std) if roll_std else 0.0
        self.expression[i] = _random_expression(rng)
        self.set_light(i, _random_light(rng))
        self.bg_colour[i], self.bg_gradient[i] = _random_background(rng)
        self.degradation[i] = _sample_degradation(rng) if degrade else None
        self.noise_seed[i] = rng.integers(2 ** 62)

    def subset(self, idx: Sequence[int]) -> "_Views":
        idx = np.asarray(idx, np.int64)
        out = _Views(idx.size)
        for name in ("ident", "noise_seed") + _VIEW_FIELDS:
            setattr(out, name, getattr(self, name)[idx])
        out.degradation = [self.degradation[i] for i in idx]
        return out

    def quality(self) -> np.ndarray:
        return np.array([quality_score(d) for d in self.degradation], np.float32)


def _backgrounds(views: _Views, size: int) -> np.ndarray:
    c = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    gx, gy = views.bg_gradient[:, 0, None, None, None], views.bg_gradient[:, 1, None, None, None]
    ramp = gx * c[None, None, :, None] + gy * c[None, :, None, None]
    return np.clip(views.bg_colour[:, None, None, :] + ramp, 0.0, 1.0)


def _render_views(maps: face3d.FaceMaps, views: _Views, batch: int = 32) -> Dict[str, np.ndarray]:
    """Clean renders of ``views`` (no degradation), in sub-batches of ``batch``."""
    parts = []
    for s in range(0, views.n, batch):
        v = views.subset(range(s, min(s + batch, views.n)))
        parts.append(face3d.render_batch(maps, v.ident, v.yaw, v.pitch, v.roll, v.expression, v.ambient,
                                         v.diffuse, v.direction, v.colour, _backgrounds(v, maps.size)))
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    out["image"] = np.rint(out["image"] * 255.0).astype(np.uint8)
    return out


def _frontal_views(views: _Views) -> _Views:
    front = _Views(views.n)
    front.ident = views.ident.copy()
    return front


# --------------------------------------------------------------------------- single render
@dataclass
class FaceSample:
    """One rendered face with its ground truth.

    Attributes:
        image: (S, S, 3) uint8 RGB, aligned like ArcFace's 5-point template at yaw 0.
        depth: (S, S) float32 depth of the visible surface in image widths (camera
            ``face3d.CAMERA_DISTANCE`` widths in front of the head centre), 0 on background.
        frontal: (S, S, 3) uint8 RGB canonical face: yaw = pitch = roll = 0, neutral
            expression, :data:`NEUTRAL_LIGHT`, black background, no degradation.
        mask: (S, S) bool face pixels of ``image``.
        landmarks: (5, 2) float32 pixel coordinates (left eye, right eye, nose, left mouth,
            right mouth) in ``image``.
        quality: float in (0, 1], 1 = pristine (:func:`quality_score`).
        pose: (yaw, pitch, roll) in degrees (see :func:`face3d.rotation_matrix`).
        identity: the identity's index.
        expression: (3,) float32 coefficients for ``EXPRESSION_NAMES``.
        light: the :class:`Light` used.
        degradation: the :class:`Degradation` applied, or None.
        frontal_depth, frontal_mask: depth (S, S) float32 and mask (S, S) bool of ``frontal``.
    """

    image: np.ndarray
    depth: np.ndarray
    frontal: np.ndarray
    mask: np.ndarray
    landmarks: np.ndarray
    quality: float
    pose: Tuple[float, float, float]
    identity: int = 0
    expression: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    light: Light = NEUTRAL_LIGHT
    degradation: Optional[Degradation] = None
    frontal_depth: Optional[np.ndarray] = None
    frontal_mask: Optional[np.ndarray] = None


def _resolve(option: Any, name: str, rng: np.random.Generator, random_fn, none_value, kind):
    if option is None:
        return none_value
    if isinstance(option, str):
        if option != "random":
            raise ValueError(f"{name} must be None, 'random' or a {kind.__name__}, got {option!r}")
        return random_fn(rng)
    return option


def render_face(identity: Identity, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0,
                light: Union[None, str, Light] = None,
                expression: Union[None, str, Sequence[float], np.ndarray] = None, size: int = 112,
                degrade: Union[None, str, Degradation] = None, seed: int = 0,
                background: Union[None, str, Sequence[float]] = None) -> FaceSample:
    """Render one view of ``identity``.

    Args:
        identity: an :class:`Identity` (e.g. from :func:`make_identities`).
        yaw, pitch, roll: head pose in degrees; positive yaw moves the nose to the image's
            right, positive pitch moves it up, positive roll turns the image clockwise.
        light: None = :data:`NEUTRAL_LIGHT`, ``"random"`` = drawn from ``seed``, or a :class:`Light`.
        expression: None = neutral, ``"random"`` = drawn from ``seed``, or 3 coefficients
            for ``EXPRESSION_NAMES`` (smile, mouth_open, brow_raise; about [0, 1]).
        size: output size in pixels (geometry scales with it; 112 = ArcFace).
        degrade: None = pristine, ``"random"`` = drawn from ``seed``, or a :class:`Degradation`.
        seed: seed for the ``"random"`` options and the noise of a degradation.
        background: None = black, ``"random"`` = a random colour gradient, or an RGB triple in [0, 1].

    Returns:
        :class:`FaceSample`; with all defaults ``image`` equals ``frontal``.
    """
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    rng = np.random.default_rng(seed)
    views = _Views(2)
    views.yaw[0], views.pitch[0], views.roll[0] = yaw, pitch, roll
    light = _resolve(light, "light", rng, _random_light, NEUTRAL_LIGHT, Light)
    views.set_light(0, light)
    expr = _resolve(expression, "expression", rng, _random_expression, np.zeros(3, np.float32), np.ndarray)
    expr = np.asarray(expr, np.float32)
    if expr.shape != (len(EXPRESSION_NAMES),):
        raise ValueError(f"expression must have {len(EXPRESSION_NAMES)} values {EXPRESSION_NAMES}, "
                         f"got shape {expr.shape}")
    views.expression[0] = expr
    if isinstance(background, str):
        if background != "random":
            raise ValueError(f"background must be None, 'random' or an RGB triple, got {background!r}")
        views.bg_colour[0], views.bg_gradient[0] = _random_background(rng)
    elif background is not None:
        views.bg_colour[0] = np.asarray(background, np.float32).reshape(3)
    deg = _resolve(degrade, "degrade", rng, _sample_degradation, None, Degradation)
    maps = face3d.build_maps(identity.params[None], size)
    out = _render_views(maps, views)
    image, _ = _degrade(out["image"][0], deg, int(rng.integers(2 ** 62)), encode=False)
    return FaceSample(
        image=image, depth=out["depth"][0], frontal=out["image"][1], mask=out["mask"][0],
        landmarks=out["landmarks"][0], quality=quality_score(deg), pose=(float(yaw), float(pitch), float(roll)),
        identity=identity.index, expression=expr, light=light, degradation=deg,
        frontal_depth=out["depth"][1], frontal_mask=out["mask"][1],
    )


def render_faces(identities: Sequence[Identity], yaw: Union[float, Sequence[float]] = 0.0,
                 pitch: Union[float, Sequence[float]] = 0.0, roll: Union[float, Sequence[float]] = 0.0, *,
                 light: Union[None, str, Light] = None,
                 expression: Union[None, str, Sequence[float], np.ndarray] = None,
                 degrade: Union[None, str, Degradation] = None,
                 background: Union[None, str, Sequence[float]] = None,
                 size: int = 112, seed: int = 0, frontal: bool = True) -> Dict[str, np.ndarray]:
    """Batched :func:`render_face`: one view per entry of ``identities`` (repeat entries for
    several views of one person), several times faster per image.

    Args:
        identities: B identities.
        yaw, pitch, roll: scalars or (B,) degrees.
        light, expression, degrade, background: as in :func:`render_face`, the same for every
            view; ``"random"`` draws each view's value from ``seed`` (not the draws
            :func:`render_face` makes with that seed). ``expression`` may also be (B, 3).
        size: output size in pixels.
        seed: seed of the ``"random"`` draws and of the degradation noise.
        frontal: also render the canonical frontal views.

    Returns:
        dict of ``image`` (B, S, S, 3) uint8, ``depth`` (B, S, S) float32, ``mask`` (B, S, S)
        bool, ``landmarks`` (B, 5, 2) float32, ``quality`` (B,) float32, ``pose`` (B, 3)
        float32 and, with ``frontal``, ``frontal``, ``frontal_depth``, ``frontal_mask``.
    """
    b = len(identities)
    if b == 0:
        raise ValueError("identities is empty")
    rng = np.random.default_rng(seed)
    used, local = np.unique([i.index for i in identities], return_inverse=True)
    params = {i.index: i.params for i in identities}
    views = _Views(b)
    views.ident = local.astype(np.int64)
    for name, value in (("yaw", yaw), ("pitch", pitch), ("roll", roll)):
        getattr(views, name)[:] = np.broadcast_to(np.asarray(value, np.float64), (b,))
    expr_fixed = None if isinstance(expression, str) or expression is None else np.asarray(expression, np.float32)
    if expr_fixed is not None and expr_fixed.shape not in ((3,), (b, 3)):
        raise ValueError(f"expression must have shape (3,) or ({b}, 3), got {expr_fixed.shape}")
    for i in range(b):
        views.set_light(i, _resolve(light, "light", rng, _random_light, NEUTRAL_LIGHT, Light))
        if expression is not None:
            views.expression[i] = (_random_expression(rng) if expr_fixed is None
                                   else expr_fixed if expr_fixed.ndim == 1 else expr_fixed[i])
        if isinstance(background, str):
            if background != "random":
                raise ValueError(f"background must be None, 'random' or an RGB triple, got {background!r}")
            views.bg_colour[i], views.bg_gradient[i] = _random_background(rng)
        elif background is not None:
            views.bg_colour[i] = np.asarray(background, np.float32).reshape(3)
        views.degradation[i] = _resolve(degrade, "degrade", rng, _sample_degradation, None, Degradation)
        views.noise_seed[i] = rng.integers(2 ** 62)
    maps = face3d.build_maps(np.stack([params[k] for k in used]), size)
    out = _render_views(maps, views)
    for i in range(b):
        out["image"][i] = _degrade(out["image"][i], views.degradation[i], int(views.noise_seed[i]), encode=False)[0]
    out["quality"] = views.quality()
    out["pose"] = np.stack([views.yaw, views.pitch, views.roll], 1).astype(np.float32)
    if frontal:
        front = _render_views(maps, _frontal_views(views))
        out.update(frontal=front["image"], frontal_depth=front["depth"], frontal_mask=front["mask"])
    return out


# --------------------------------------------------------------------------- dataset jobs
def _loose_crop(img: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator) -> Tuple[bytes, np.ndarray]:
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


def _run_job(job: Dict[str, Any]) -> Dict[str, Any]:
    """Render one chunk of views (runs in a worker process)."""
    maps = face3d.build_maps(job["params"], job["size"])
    views: _Views = job["views"]
    out = _render_views(maps, views)
    kind = job["kind"]
    if kind == "arrays":
        front = _render_views(maps, _frontal_views(views))
        return {"render": out, "frontal": front}
    result: Dict[str, Any] = {"jpeg": [], "landmarks": out["landmarks"]}
    for i in range(views.n):
        img, data = _degrade(out["image"][i], views.degradation[i], int(views.noise_seed[i]))
        if kind == "loose":
            data, lm = _loose_crop(img, out["landmarks"][i], np.random.default_rng(int(views.noise_seed[i]) + 1))
            result["landmarks"][i] = lm
        result["jpeg"].append(data)
    return result


def _jobs(identities: Sequence[Identity], views: _Views, size: int, kind: str, chunk: int) -> Iterable[Dict[str, Any]]:
    """Split ``views`` (whose ``ident`` index ``identities``) into jobs of about ``chunk`` views."""
    for s in range(0, views.n, chunk):
        v = views.subset(range(s, min(s + chunk, views.n)))
        used, local = np.unique(v.ident, return_inverse=True)
        v.ident = local.astype(np.int64)
        params = np.stack([identities[i].params for i in used])
        yield {"params": params, "views": v, "size": size, "kind": kind}


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


class _Runner:
    """Runs jobs in order, in ``workers`` processes when ``workers > 1``."""

    def __init__(self, workers: int) -> None:
        self.pool = None
        if workers > 1:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            self.pool = ctx.Pool(workers, initializer=_worker_init)

    def map(self, jobs: Iterable[Dict[str, Any]]) -> Iterable[Dict[str, Any]]:
        if self.pool is None:
            return map(_run_job, jobs)
        return self.pool.imap(_run_job, jobs)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None


# --------------------------------------------------------------------------- dataset
_FILES = {
    "rec": "train.rec",
    "idx": "train.idx",
    "property": "property",
    "train_images": "train_images.csv",
    "verify_bin": "verify.bin",
    "verify_pairs": "verify_pairs.json",
    "ijb": "ijb",
    "ijb_pair_splits": os.path.join("ijb", "pair_splits.json"),
    "render_eval": "render_eval.npz",
    "meta": "meta.json",
}
IJB_TARGET = "SYNTH"
"""Target name of the IJB-style set: files ``ijb/meta/synth_*.txt``."""


def _paths(out: str) -> Dict[str, str]:
    return {k: os.path.join(out, v) for k, v in _FILES.items()}


_COMMAND = "data synth"


def _is_complete(out: str, config: Dict[str, Any]) -> bool:
    """``out`` holds a whole dataset of ``config``: its manifest lists every file with its size and SHA-256."""
    doc = read_manifest(out)
    if doc is None or doc.get("command") != _COMMAND or doc.get("config") != config:
        return False
    listed = set(doc["files"])
    if not {_FILES["meta"], _FILES["rec"], _FILES["idx"]} <= listed:
        return False
    return not verify_manifest(out, doc)


def _legacy_owned(out: str) -> Optional[set]:
    """Files of a dataset written before manifests existed (recognised by its meta.json)."""
    try:
        with open(os.path.join(out, _FILES["meta"]), encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != "lh2face-synthetic":
        return None
    owned = {v.replace(os.sep, "/") for k, v in _FILES.items() if k != "ijb"}
    t = IJB_TARGET.lower()
    owned |= {"ijb/images.csv"} | {f"ijb/meta/{t}_{n}.txt" for n in ("face_tid_mid", "name_5pts_score",
                                                                        "template_pair_label")}
    count = int(meta.get("counts", {}).get("ijb_images", 0))
    owned |= {f"ijb/loose_crop/{k + 1}.jpg" for k in range(count)}
    return owned


def _write_json(path: str, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, separators=(",", ":"))
        f.write("\n")


def _with_quality(rng: np.random.Generator, high: Optional[bool], tries: int = 50) -> Optional[Degradation]:
    """A random degradation whose quality is high (>= HIGH_QUALITY), low, or either (``None``)."""
    for _ in range(tries):
        d = _sample_degradation(rng, pristine=0.4 if high else 0.0)
        if high is None or (quality_score(d) >= HIGH_QUALITY) == high:
            return d
    return None if high else Degradation(blur=2.0, scale=3.0, noise=10.0, jpeg=20)


def _train_views(ids: Sequence[Identity], per_id: int, seed: int) -> _Views:
    views = _Views(len(ids) * per_id)
    for i in range(len(ids)):
        rng = np.random.default_rng([seed, _STREAM_TRAIN, i])
        for j in range(per_id):
            k = i * per_id + j
            views.ident[k] = i
            views.randomise(k, rng)
    return views


def _verify_plan(ids: Sequence[Identity], pairs: int, seed: int) -> Tuple[_Views, List[Dict[str, Any]]]:
    rng = np.random.default_rng([seed, _STREAM_VERIFY])
    families: Dict[int, List[int]] = {}
    for ident in ids:
        families.setdefault(ident.family, []).append(ident.index)
    hard_fams = [f for f, m in families.items() if len(m) > 1]
    negatives = pairs - pairs // 2
    kinds = ["same"] * (pairs // 2) + ["hard"] * (negatives // 2) + ["easy"] * (negatives - negatives // 2)
    if not hard_fams:
        kinds = ["easy" if k == "hard" else k for k in kinds]
    kinds = [kinds[i] for i in rng.permutation(len(kinds))]
    views = _Views(2 * pairs)
    records = []
    for p, kind in enumerate(kinds):
        if kind == "same":
            a = b = int(rng.integers(len(ids)))
        elif kind == "hard":
            a, b = (int(v) for v in rng.choice(families[hard_fams[rng.integers(len(hard_fams))]], 2, replace=False))
        else:
            while True:
                a, b = (int(v) for v in rng.choice(len(ids), 2, replace=False))
                if ids[a].family != ids[b].family:
                    break
        high = bool(rng.random() < 0.5)
        degs = [_with_quality(rng, True if high else None), _with_quality(rng, high)]
        if rng.random() < 0.5:
            degs.reverse()
        for k, (ident, deg) in enumerate(zip((a, b), degs)):
            v = 2 * p + k
            views.ident[v] = ident
            views.randomise(v, rng, degrade=False)
            views.degradation[v] = deg
        q = [quality_score(d) for d in degs]
        records.append({
            "index": p, "same": kind == "same",
            "hard": ids[a].hard if kind == "same" else kind == "hard",
            "quality": "high" if min(q) >= HIGH_QUALITY else "low",
            "identities": [a, b], "families": [ids[a].family, ids[b].family],
            "image_quality": [round(x, 4) for x in q],
            "yaw": [round(float(views.yaw[2 * p]), 2), round(float(views.yaw[2 * p + 1]), 2)],
        })
    return views, records


def _ijb_plan(ids: Sequence[Identity], seed: int, templates_per_id: int = 2):
    rng = np.random.default_rng([seed, _STREAM_IJB])
    rows = []  # (identity, tid, mid)
    tid = mid = 0
    template_ident = {}
    for ident in ids:
        for _ in range(templates_per_id):
            tid += 1
            template_ident[tid] = ident.index
            for _ in range(int(rng.integers(1, 4))):
                mid += 1
                rows += [(ident.index, tid, mid)] * int(rng.integers(1, 3))
    views = _Views(len(rows))
    for k, (ident, _, m) in enumerate(rows):
        views.ident[k] = ident
        views.randomise(k, rng, roll_std=0.0, degrade=False)
        views.degradation[k] = _with_quality(rng, None)
        if k and rows[k - 1][2] == m:  # frames of one media share light, background and expression
            for name in ("expression", "ambient", "diffuse", "direction", "colour", "bg_colour", "bg_gradient"):
                getattr(views, name)[k] = getattr(views, name)[k - 1]
            views.yaw[k] = np.clip(views.yaw[k - 1] + rng.normal(0, 5), -60, 60)
            views.pitch[k] = views.pitch[k - 1] + rng.normal(0, 3)
    quality = views.quality()
    tq = {t: float(np.mean([q for (_, tt, _), q in zip(rows, quality) if tt == t])) for t in template_ident}
    tids = sorted(template_ident)
    genuine, hard, easy = [], [], []
    for i, t1 in enumerate(tids):
        for t2 in tids[i + 1:]:
            a, b = ids[template_ident[t1]], ids[template_ident[t2]]
            if a.index == b.index:
                genuine.append((t1, t2))
            elif a.family == b.family:
                hard.append((t1, t2))
            else:
                easy.append((t1, t2))
    room = max(0, _MAX_IJB_PAIRS - len(genuine) - len(hard))
    if len(easy) > room:
        easy = [easy[i] for i in np.sort(rng.choice(len(easy), room, replace=False))]
    pairs = []
    for (t1, t2), label, is_hard in ([(p, 1, ids[template_ident[p[0]]].hard) for p in genuine]
                                     + [(p, 0, True) for p in hard] + [(p, 0, False) for p in easy]):
        pairs.append([t1, t2, label, int(is_hard), int(min(tq[t1], tq[t2]) >= HIGH_QUALITY)])
    return views, rows, pairs, template_ident, tq


def generate_dataset(out: Union[str, "os.PathLike[str]"], identities: int = 200, images_per_id: int = 20,
                     seed: int = 0, *, eval_identities: Optional[int] = None, verify_pairs: Optional[int] = None,
                     render_eval: int = 128, size: int = 112, workers: Optional[int] = None,
                     progress: bool = True, overwrite: bool = False) -> Dict[str, str]:
    """Write a complete synthetic dataset (training set and evaluation sets) to ``out``.

    Written all or nothing: built in a staging folder beside ``out`` and swapped in whole
    (:func:`lh2face_plugin.fileio.writing_folder`), with a manifest of every file's size and
    SHA-256. An ``out`` already holding this dataset, whole by its manifest, is reused as it
    is unless ``overwrite``. ``out`` must be new, empty or a dataset this function made, unless
    ``overwrite``; files in ``out`` that it did not make (say ``ijb/notes.txt``) are kept. Files:

    - ``train.rec``, ``train.idx``, ``property``: insightface layout. Record 0 has labels
      ``[N + 1, N + 1 + K]``; records 1..N are JPEG images with the scalar label ``class``
      (flag 0, as arcface_torch's ``MXFaceDataset`` reads them), grouped by class; records
      N+1..N+K are identity records ``[first, end)``.
    - ``train_images.csv``: per training image its key, label, family, hard flag, quality,
      pose and degradation.
    - ``verify.bin``: arcface_torch's verification format, a pickle of ``(list of JPEG
      bytes, list of bool)`` with 2 images per pair; ``verify_pairs.json``: per pair
      same/hard/quality split, identities, image qualities.
    - ``ijb/``: IJB-style 1:1 set, target ``SYNTH``: ``meta/synth_face_tid_mid.txt``,
      ``meta/synth_template_pair_label.txt``, ``meta/synth_name_5pts_score.txt`` and
      ``loose_crop/<n>.jpg`` (loose crops with landmarks in crop coordinates), plus
      ``images.csv`` and ``pair_splits.json``.
    - ``render_eval.npz``: yawed clean inputs with ground-truth depth, mask, landmarks,
      pose and the frontal image/depth/mask.
    - ``meta.json``: configuration, counts, file names, conventions.

    Evaluation identities are disjoint from the training identities (another random
    stream). The same arguments give byte-identical files, whatever ``workers``.

    Args:
        out: output folder.
        identities: K training identities.
        images_per_id: M images per training identity.
        seed: random seed.
        eval_identities: identities of the evaluation sets (default ``clip(K // 4, 20, 500)``).
        verify_pairs: pairs in ``verify.bin`` (default ``clip(K, 200, 3000)`` rounded to 20).
        render_eval: number of renderer-evaluation samples.
        size: image size (112 for ArcFace).
        workers: rendering processes (default: 1 for small sets, else ``min(2, cpu_count)``).
        progress: show a tqdm bar.
        overwrite: regenerate even when ``out`` already holds this dataset, and write into a
            non-empty folder this function did not make (replacing only files of the same names).

    Returns:
        ``{name: path}`` for ``rec, idx, property, train_images, verify_bin, verify_pairs,
        ijb, ijb_pair_splits, render_eval, meta``.
    """
    for name, value, low in (("identities", identities, 2), ("images_per_id", images_per_id, 1),
                             ("render_eval", render_eval, 0), ("size", size, 16)):
        if int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    n_eval = int(eval_identities) if eval_identities is not None else int(np.clip(identities // 4, 20, 500))
    if n_eval < 4:
        raise ValueError(f"eval_identities must be >= 4, got {n_eval}")
    n_pairs = int(verify_pairs) if verify_pairs is not None else int(np.clip(round(identities / 20) * 20, 200, 3000))
    if n_pairs < 2:
        raise ValueError(f"verify_pairs must be >= 2, got {n_pairs}")
    if workers is None:
        small = identities * images_per_id + 2 * n_pairs < 2000
        workers = 1 if small else min(2, os.cpu_count() or 1)
    workers = max(1, int(workers))
    out = os.path.abspath(os.fspath(out))
    if os.path.exists(out) and not os.path.isdir(out):
        raise FileExistsError(f"output {out!r} exists and is not a folder")
    config = {"version": FORMAT_VERSION, "identities": int(identities), "images_per_id": int(images_per_id),
              "seed": int(seed), "eval_identities": n_eval, "verify_pairs": n_pairs,
              "render_eval": int(render_eval), "size": int(size)}
    if not overwrite and _is_complete(out, config):
        cleanup_stale(out)
        cleanup_stale_in(out, recursive=True)
        return _paths(out)

    from .recordio import IRHeader, MXIndexedRecordIO, pack

    train_ids = make_identities(int(identities), seed)
    eval_ids = _identities(n_eval, seed, _STREAM_EVAL_IDS, 3, 0.5, 0.35)
    train_views = _train_views(train_ids, int(images_per_id), seed)
    verify_views, verify_records = _verify_plan(eval_ids, n_pairs, seed)
    ijb_views, ijb_rows, ijb_pairs, template_ident, template_quality = _ijb_plan(eval_ids, seed)
    rng = np.random.default_rng([seed, _STREAM_RENDER])
    render_views = _Views(int(render_eval))
    for k in range(render_views.n):
        render_views.ident[k] = rng.integers(n_eval)
        render_views.randomise(k, rng, degrade=False)
        render_views.yaw[k] = rng.uniform(-50, 50)

    folder = FolderWriter(out, _COMMAND, overwrite=overwrite, extra={"config": config}, legacy=_legacy_owned)
    stage = folder.path
    total = train_views.n + verify_views.n + ijb_views.n + render_views.n
    bar = tqdm(total=total, desc="synth", unit="img", disable=not progress, dynamic_ncols=True)
    runner = _Runner(workers)
    try:
        paths = _paths(stage)
        n_img, k_ids, m = train_views.n, len(train_ids), int(images_per_id)
        writer = MXIndexedRecordIO(paths["idx"], paths["rec"], "w")
        try:
            writer.write_idx(0, pack(IRHeader(0, [n_img + 1, n_img + 1 + k_ids], 0, 0), b""))
            key = 1
            for res in runner.map(_jobs(train_ids, train_views, size, "jpeg", 128)):
                for data in res["jpeg"]:
                    label = int(train_views.ident[key - 1])
                    writer.write_idx(key, pack(IRHeader(0, float(label), key, 0), data))
                    key += 1
                bar.update(len(res["jpeg"]))
            for i in range(k_ids):
                writer.write_idx(n_img + 1 + i, pack(IRHeader(0, [1 + i * m, 1 + (i + 1) * m], n_img + 1 + i, 0), b""))
        except BaseException:
            writer.abort()
            raise
        writer.close()
        with open(paths["property"], "w", encoding="utf-8") as f:
            f.write(f"{k_ids},{size},{size}\n")
        quality = train_views.quality()
        with open(paths["train_images"], "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["key", "label", "family", "hard", "quality", "yaw", "pitch", "roll",
                        "blur", "scale", "noise", "jpeg"])
            for i in range(n_img):
                ident = train_ids[int(train_views.ident[i])]
                d = train_views.degradation[i] or Degradation()
                w.writerow([i + 1, ident.index, ident.family, int(ident.hard), f"{quality[i]:.4f}",
                            f"{train_views.yaw[i]:.2f}", f"{train_views.pitch[i]:.2f}", f"{train_views.roll[i]:.2f}",
                            f"{d.blur:.3f}", f"{d.scale:.3f}", f"{d.noise:.3f}", "" if d.jpeg is None else d.jpeg])

        bins: List[bytes] = []
        for res in runner.map(_jobs(eval_ids, verify_views, size, "jpeg", 128)):
            bins += res["jpeg"]
            bar.update(len(res["jpeg"]))
        with open(paths["verify_bin"], "wb") as f:
            pickle.dump((bins, [r["same"] for r in verify_records]), f, protocol=4)
        _write_json(paths["verify_pairs"], {
            "quality_threshold": HIGH_QUALITY,
            "hard": "negative: both identities from one family; positive: the identity has family look-alikes",
            "quality": "high when both images have quality >= quality_threshold",
            "pairs": verify_records,
        })

        ijb = paths["ijb"]
        os.makedirs(os.path.join(ijb, "meta"))
        os.makedirs(os.path.join(ijb, "loose_crop"))
        names = [f"{k + 1}.jpg" for k in range(ijb_views.n)]
        lms = []
        k = 0
        for res in runner.map(_jobs(eval_ids, ijb_views, size, "loose", 64)):
            for data in res["jpeg"]:
                with open(os.path.join(ijb, "loose_crop", names[k]), "wb") as f:
                    f.write(data)
                k += 1
            lms.append(res["landmarks"])
            bar.update(len(res["jpeg"]))
        lms = np.concatenate(lms)
        iq = ijb_views.quality()
        prefix = os.path.join(ijb, "meta", IJB_TARGET.lower())
        with open(prefix + "_face_tid_mid.txt", "w", encoding="utf-8") as f:
            f.writelines(f"{n} {t} {mm}\n" for n, (_, t, mm) in zip(names, ijb_rows))
        with open(prefix + "_name_5pts_score.txt", "w", encoding="utf-8") as f:
            for n, lm, q in zip(names, lms, iq):
                f.write(n + " " + " ".join(f"{v:.3f}" for v in lm.ravel()) + f" {0.6 + 0.4 * q:.4f}\n")
        with open(prefix + "_template_pair_label.txt", "w", encoding="utf-8") as f:
            f.writelines(f"{p[0]} {p[1]} {p[2]}\n" for p in ijb_pairs)
        with open(os.path.join(ijb, "images.csv"), "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["name", "tid", "mid", "identity", "family", "hard", "quality", "yaw", "pitch"])
            for i, (n, (ident, t, mm)) in enumerate(zip(names, ijb_rows)):
                e = eval_ids[ident]
                w.writerow([n, t, mm, ident, e.family, int(e.hard), f"{iq[i]:.4f}",
                            f"{ijb_views.yaw[i]:.2f}", f"{ijb_views.pitch[i]:.2f}"])
        _write_json(paths["ijb_pair_splits"], {
            "target": IJB_TARGET, "quality_threshold": HIGH_QUALITY,
            "hard": "impostor: both templates from one family; genuine: the identity has family look-alikes",
            "high_quality": "both templates' mean image quality >= quality_threshold",
            "columns": ["tid1", "tid2", "label", "hard", "high_quality"], "pairs": ijb_pairs,
            "templates": {str(t): {"identity": i, "family": eval_ids[i].family,
                                   "quality": round(template_quality[t], 4)} for t, i in template_ident.items()},
        })

        arrays: Dict[str, List[np.ndarray]] = {}
        for res in runner.map(_jobs(eval_ids, render_views, size, "arrays", 64)):
            for key_, src in (("", res["render"]), ("frontal_", res["frontal"])):
                for name in ("image", "depth", "mask", "landmarks"):
                    arrays.setdefault(key_ + name, []).append(src[name])
            bar.update(len(res["render"]["image"]))
        data = {("frontal" if k_ == "frontal_image" else k_): np.concatenate(v) for k_, v in arrays.items()}
        rv = render_views
        np.savez_compressed(
            paths["render_eval"], **data,
            pose=np.stack([rv.yaw, rv.pitch, rv.roll], 1).astype(np.float32),
            identity=rv.ident.astype(np.int64), family=np.array([eval_ids[i].family for i in rv.ident], np.int64),
            hard=np.array([eval_ids[i].hard for i in rv.ident], bool), expression=rv.expression,
            light_ambient=rv.ambient, light_diffuse=rv.diffuse, light_direction=rv.direction)
        bar.close()

        _write_json(paths["meta"], {
            "format": "lh2face-synthetic", "config": config,
            "counts": {"train_images": n_img, "train_identities": k_ids, "eval_identities": n_eval,
                       "verify_pairs": n_pairs, "ijb_images": ijb_views.n, "ijb_templates": len(template_ident),
                       "ijb_pairs": len(ijb_pairs), "render_eval": render_views.n},
            "files": _FILES, "ijb_target": IJB_TARGET, "quality_threshold": HIGH_QUALITY,
            "train_records": "record 0: [N+1, N+1+K]; 1..N: [class, 0]; N+1..N+K: [first, end)",
            "image": "RGB, aligned to ArcFace's 112x112 5-point template at yaw 0",
            "depth": f"image widths from the image plane of an orthographic camera {face3d.CAMERA_DISTANCE} "
                     "widths in front of the head centre; 0 on background",
            "pose": "degrees; yaw > 0 moves the nose right, pitch > 0 up, roll > 0 turns the image clockwise",
            "train_families": [i.family for i in train_ids], "train_hard": [int(i.hard) for i in train_ids],
        })
        runner.close()
        folder.publish()
    finally:
        runner.close()
        bar.close()
        folder.discard()
    return _paths(out)
