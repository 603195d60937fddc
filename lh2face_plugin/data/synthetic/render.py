"""Rendering faces: one view with its ground truth (:func:`render_face`), or many at once (:func:`render_faces`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from .. import face3d
from ..face3d import EXPRESSION_NAMES, NEUTRAL_LIGHT, Light
from .identities import Identity
from .quality import Degradation, quality_score, sample_degradation
from .quality import degrade as apply_degradation
from .views import Views, frontal_views, random_background, random_expression, random_light, render_views

__all__ = ["FaceSample", "render_face", "render_faces"]


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
    views = Views(2)
    views.yaw[0], views.pitch[0], views.roll[0] = yaw, pitch, roll
    light = _resolve(light, "light", rng, random_light, NEUTRAL_LIGHT, Light)
    views.set_light(0, light)
    expr = _resolve(expression, "expression", rng, random_expression, np.zeros(3, np.float32), np.ndarray)
    expr = np.asarray(expr, np.float32)
    if expr.shape != (len(EXPRESSION_NAMES),):
        raise ValueError(f"expression must have {len(EXPRESSION_NAMES)} values {EXPRESSION_NAMES}, "
                         f"got shape {expr.shape}")
    views.expression[0] = expr
    if isinstance(background, str):
        if background != "random":
            raise ValueError(f"background must be None, 'random' or an RGB triple, got {background!r}")
        views.bg_colour[0], views.bg_gradient[0] = random_background(rng)
    elif background is not None:
        views.bg_colour[0] = np.asarray(background, np.float32).reshape(3)
    deg = _resolve(degrade, "degrade", rng, sample_degradation, None, Degradation)
    maps = face3d.build_maps(identity.params[None], size)
    out = render_views(maps, views)
    image, _ = apply_degradation(out["image"][0], deg, int(rng.integers(2 ** 62)), encode=False)
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
    views = Views(b)
    views.ident = local.astype(np.int64)
    for name, value in (("yaw", yaw), ("pitch", pitch), ("roll", roll)):
        getattr(views, name)[:] = np.broadcast_to(np.asarray(value, np.float64), (b,))
    expr_fixed = None if isinstance(expression, str) or expression is None else np.asarray(expression, np.float32)
    if expr_fixed is not None and expr_fixed.shape not in ((3,), (b, 3)):
        raise ValueError(f"expression must have shape (3,) or ({b}, 3), got {expr_fixed.shape}")
    for i in range(b):
        views.set_light(i, _resolve(light, "light", rng, random_light, NEUTRAL_LIGHT, Light))
        if expression is not None:
            views.expression[i] = (random_expression(rng) if expr_fixed is None
                                   else expr_fixed if expr_fixed.ndim == 1 else expr_fixed[i])
        if isinstance(background, str):
            if background != "random":
                raise ValueError(f"background must be None, 'random' or an RGB triple, got {background!r}")
            views.bg_colour[i], views.bg_gradient[i] = random_background(rng)
        elif background is not None:
            views.bg_colour[i] = np.asarray(background, np.float32).reshape(3)
        views.degradation[i] = _resolve(degrade, "degrade", rng, sample_degradation, None, Degradation)
        views.noise_seed[i] = rng.integers(2 ** 62)
    maps = face3d.build_maps(np.stack([params[k] for k in used]), size)
    out = render_views(maps, views)
    for i in range(b):
        out["image"][i] = apply_degradation(out["image"][i], views.degradation[i], int(views.noise_seed[i]),
                                            encode=False)[0]
    out["quality"] = views.quality()
    out["pose"] = np.stack([views.yaw, views.pitch, views.roll], 1).astype(np.float32)
    if frontal:
        front = render_views(maps, frontal_views(views))
        out.update(frontal=front["image"], frontal_depth=front["depth"], frontal_mask=front["mask"])
    return out
