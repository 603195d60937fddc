"""Parametric 3D faces and a vectorised CPU renderer (the geometry behind :mod:`.synthetic`).

A face is a height field ``h(x, y)`` over the canonical (frontal) image plane plus an
albedo map, both decoded from a latent parameter vector (:data:`PARAM_NAMES`, one
standard-normal entry each). Coordinates are *template pixels*: the 112x112 frame of
ArcFace's 5-point template, ``x`` to the right, ``y`` down, ``z`` (height) towards the
camera. A camera pose ``R = R_roll @ R_yaw @ R_pitch`` rotates the surface about the head
centre :data:`HEAD_CENTRE`; the camera is orthographic.

Rendering is a two-pass scanline warp (Catmull & Smith, SIGGRAPH 1980): pitch rotates every
column in the y-z plane, then yaw every row in the x-z plane; in each pass a row's visible
samples are those whose projection exceeds the running maximum of the samples nearer the
camera, so the inverse map (output pixel -> surface point) is read off the monotone
running maximum by a batched binary search. Roll is an in-plane rotation of the result.
Shading is Lambertian, ``I = albedo * (ambient + diffuse * max(0, n.l)) * colour``, evaluated
in the canonical frame as ``n_can . (R^T l)`` and carried through the warp. The arrays are
numpy; torch's CPU kernels (``cummax``, ``searchsorted``, ``grid_sample``) do the scans and
gathers.

Depth convention (:func:`depth_from_height`): distance from the image plane of an
orthographic camera placed :data:`CAMERA_DISTANCE` image widths in front of the head
centre, in image widths; positive on the face, 0 on background.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, Tuple

import numpy as np
import torch

__all__ = [
    "TEMPLATE_SIZE",
    "ARCFACE_TEMPLATE",
    "PARAM_NAMES",
    "NUM_PARAMS",
    "EXPRESSION_NAMES",
    "HEAD_CENTRE",
    "CAMERA_DISTANCE",
    "Light",
    "NEUTRAL_LIGHT",
    "FaceMaps",
    "build_maps",
    "rotation_matrix",
    "render_batch",
    "depth_from_height",
]

TEMPLATE_SIZE = 112
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
"""ArcFace's 112x112 5-point template (left eye, right eye, nose, left / right mouth corner),
in image order (``left`` = smaller x)."""

PARAM_NAMES: Tuple[str, ...] = (
    # head shape
    "head_width", "head_height", "jaw_taper", "head_depth", "forehead_slope",
    # brow and eyes
    "brow_ridge", "brow_height", "eye_spacing", "eye_height", "socket_depth", "socket_size",
    # nose
    "nose_length", "nose_protrusion", "nose_width", "nose_bridge",
    # cheeks, mouth, chin
    "cheek_fullness", "cheek_height", "mouth_width", "mouth_height", "lip_fullness",
    "chin_protrusion", "chin_width",
    # albedo
    "skin_tone", "skin_warmth", "brow_darkness", "brow_thickness", "iris_colour", "lip_colour",
    "hair_colour", "hairline", "beard", "blush",
) + tuple(f"texture_{k}" for k in range(16))
"""Names of the latent identity parameters; each is standard normal a priori."""
NUM_PARAMS = len(PARAM_NAMES)
_P = {name: i for i, name in enumerate(PARAM_NAMES)}
_TEXTURE = slice(_P["texture_0"], NUM_PARAMS)

EXPRESSION_NAMES: Tuple[str, ...] = ("smile", "mouth_open", "brow_raise")
"""Expression coefficients: shared height-field offsets (and a mouth-cavity shadow)."""

HEAD_CENTRE = np.array([56.0, 56.0, 26.0], dtype=np.float32)
"""Rotation centre (x, y, z) in template pixels: mid-face, 26 px behind the head's rim plane."""
CAMERA_DISTANCE = 5.0
"""Distance of the camera's image plane from the head centre, in image widths."""


@dataclass(frozen=True)
class Light:
    """Directional light plus ambient term.

    Args:
        ambient: ambient intensity.
        diffuse: intensity of the directional light.
        direction: (3,) unit vector from the surface towards the light in camera
            coordinates (x right, y down, z towards the camera).
        colour: (3,) RGB multiplier.
    """

    ambient: float = 0.55
    diffuse: float = 0.45
    direction: Tuple[float, float, float] = (0.0, 0.0, 1.0)
    colour: Tuple[float, float, float] = (1.0, 1.0, 1.0)


NEUTRAL_LIGHT = Light()
"""The canonical face's light: ambient plus a light on the camera axis."""


def depth_from_height(z: np.ndarray) -> np.ndarray:
    """Camera depth (image widths) of camera-frame heights ``z`` (template pixels)."""
    return (CAMERA_DISTANCE - (z - HEAD_CENTRE[2]) / TEMPLATE_SIZE).astype(np.float32)


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """(3, 3) float64 ``R_roll @ R_yaw @ R_pitch`` in degrees.

    Positive yaw moves the nose to the image's right, positive pitch moves it up, positive
    roll turns the image content clockwise.
    """
    y, p, r = np.deg2rad([yaw, pitch, roll])
    cp, sp = np.cos(-p), np.sin(-p)
    cy, sy = np.cos(y), np.sin(y)
    cr, sr = np.cos(r), np.sin(r)
    r_pitch = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
    r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return r_roll @ r_yaw @ r_pitch


# --------------------------------------------------------------------------- grids
def _margin(size: int) -> int:
    return max(2, int(round(size * 8 / TEMPLATE_SIZE)))


@lru_cache(maxsize=8)
def _grid(size: int) -> np.ndarray:
    """Template-pixel coordinates of the canonical samples: ``size`` pixels plus margins."""
    m = _margin(size)
    k = np.arange(-m, size + m, dtype=np.float64)
    return ((k + 0.5) * TEMPLATE_SIZE / size - 0.5).astype(np.float32)


def _to_pixel(c: np.ndarray, size: int) -> np.ndarray:
    """Template-pixel coordinate -> output pixel index (pixel centres at integers); keeps the dtype."""
    return (c + 0.5) * (size / TEMPLATE_SIZE) - 0.5


def _gauss(x, y, x0, y0, sx, sy):
    return np.exp(-0.5 * (((x - x0) / sx) ** 2 + ((y - y0) / sy) ** 2))


def _smoothstep(e0, e1, v):
    t = np.clip((v - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _soft_disc(r2, edge=0.15):
    """1 inside ``r2 < 1``, 0 outside, a linear ramp of relative width ``edge``."""
    return np.clip((1.0 - np.sqrt(r2)) / edge, 0.0, 1.0)


@lru_cache(maxsize=8)
def _texture_basis(size: int) -> np.ndarray:
    """(16, G, G) smooth zero-mean unit-variance fields, fixed for all identities."""
    g = _grid(size).astype(np.float64)
    rng = np.random.default_rng(20240601)
    out = np.empty((16, g.size, g.size), np.float32)
    for k in range(16):
        f = np.zeros((g.size, g.size))
        for _ in range(6):
            wavelength = rng.uniform(8.0, 48.0)
            angle = rng.uniform(0, np.pi)
            phase = rng.uniform(0, 2 * np.pi)
            kx, ky = np.cos(angle) * 2 * np.pi / wavelength, np.sin(angle) * 2 * np.pi / wavelength
            f += np.cos(kx * g[None, :] + ky * g[:, None] + phase)
        out[k] = (f - f.mean()) / f.std()
    return out


@lru_cache(maxsize=8)
def _expression_basis(size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Height offsets (E, G, G) per unit expression coefficient and the mouth-cavity shadow (G, G)."""
    g = _grid(size).astype(np.float64)
    x, y = g[None, :], g[:, None]
    cx = HEAD_CENTRE[0]
    smile = sum(3.0 * _gauss(x, y, cx + s * 22, 77, 8, 7) + 1.5 * _gauss(x, y, cx + s * 15, 90, 4, 3)
                for s in (-1, 1))
    mouth_open = -5.0 * _gauss(x, y, cx, 93, 9, 3) + 2.0 * _gauss(x, y, cx, 106, 12, 5)
    brow = sum(2.5 * _gauss(x, y, cx + s * 18, 39, 11, 3.5) for s in (-1, 1))
    basis = np.stack([smile, mouth_open, brow]).astype(np.float32)
    cavity = _gauss(x, y, cx, 93, 10, 2.0).astype(np.float32)
    return basis, cavity


# --------------------------------------------------------------------------- identity maps
@dataclass
class FaceMaps:
    """Canonical maps of a batch of identities on the extended grid (G = size + 2 margins).

    Attributes:
        size: output image size the grid was built for.
        height: (B, G, G) float32 height towards the camera, template pixels (0 = rim plane).
        albedo: (B, G, G, 3) float32 in [0, 1].
        alpha: (B, G, G) float32 head coverage (1 on the head, ramps to 0 at its outline).
        landmarks: (B, 5, 2) float32 canonical 5 points in template pixels (ArcFace order).
    """

    size: int
    height: np.ndarray
    albedo: np.ndarray
    alpha: np.ndarray
    landmarks: np.ndarray

    def __len__(self) -> int:
        return self.height.shape[0]


def build_maps(params: np.ndarray, size: int = TEMPLATE_SIZE) -> FaceMaps:
    """Decode latent parameters into height, albedo and coverage maps.

    Args:
        params: (B, NUM_PARAMS) latent vectors (clipped to [-2.5, 2.5]).
        size: output image size; geometry is defined in template pixels and sampled at
            ``size`` pixels per 112.

    Returns:
        :class:`FaceMaps` with float32 maps of shape (B, G, G[, 3]).
    """
    z = np.clip(np.asarray(params, np.float32), -2.5, 2.5)
    if z.ndim != 2 or z.shape[1] != NUM_PARAMS:
        raise ValueError(f"params must have shape (B, {NUM_PARAMS}), got {z.shape}")
    p = {name: z[:, i, None, None] for name, i in _P.items()}
    g = _grid(size)
    x, y = g[None, None, :], g[None, :, None]
    cx, cy = float(HEAD_CENTRE[0]), float(HEAD_CENTRE[1])

    a = 44.0 + 2.0 * p["head_width"]
    b = 58.0 + 2.0 * p["head_height"]
    jaw = 0.24 + 0.05 * p["jaw_taper"]
    a_eff = a * (1.0 - jaw * _smoothstep(cy + 5.0, cy + b, y))
    r2 = ((x - cx) / a_eff) ** 2 + ((y - cy) / b) ** 2
    depth = (34.0 + 2.5 * p["head_depth"]) * (1.0 - 0.06 * p["forehead_slope"] * (cy - y) / b)
    h = depth * np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))

    ex = 17.6 + 1.2 * p["eye_spacing"]
    ey = 51.6 + 1.2 * p["eye_height"]
    brow_off = 10.5 + 1.0 * p["brow_height"]
    sock = 6.0 + 1.2 * p["socket_depth"]
    sock_r = 8.0 + 0.8 * p["socket_size"]
    for s in (-1.0, 1.0):
        h = h + (4.0 + 1.0 * p["brow_ridge"]) * _gauss(x, y, cx + s * ex, ey - brow_off, 9.0, 3.5)
        h = h - sock * _gauss(x, y, cx + s * ex, ey, sock_r, 0.7 * sock_r)
        h = h + 0.45 * sock * _gauss(x, y, cx + s * ex, ey, 4.5, 3.0)
    h = h + (2.5 + 0.8 * p["brow_ridge"]) * _gauss(x, y, cx, ey - brow_off + 3.0, 6.0, 4.0)

    ny = 71.7 + 1.8 * p["nose_length"]
    n_prot = 16.0 + 2.5 * p["nose_protrusion"]
    n_w = 7.0 + 1.0 * p["nose_width"]
    bridge = 0.55 + 0.12 * p["nose_bridge"]
    top = ey - 6.0
    t = np.clip((y - top) / (ny - top), 0.0, 1.0)
    width = 3.0 + (n_w - 3.0) * t ** 2
    profile = bridge + (1.0 - bridge) * t ** 1.5
    below = np.where(y > ny, np.exp(-0.5 * ((y - ny) / 3.0) ** 2), 1.0)
    above = _smoothstep(top - 6.0, top, y)
    h = h + n_prot * profile * np.exp(-0.5 * ((x - cx) / width) ** 2) * below * above
    for s in (-1.0, 1.0):
        h = h + 3.0 * _gauss(x, y, cx + s * 0.9 * n_w, ny + 1.0, 3.0, 2.5)

    ch_y = 70.0 + 2.0 * p["cheek_height"]
    for s in (-1.0, 1.0):
        h = h + (5.0 + 1.5 * p["cheek_fullness"]) * _gauss(x, y, cx + s * 24.0, ch_y, 9.0, 8.0)

    mw = 14.6 + 1.3 * p["mouth_width"]
    my = 92.3 + 1.3 * p["mouth_height"]
    lip = 2.5 + 0.7 * p["lip_fullness"]
    upper = _gauss(x, y, cx, my - 2.4, 0.8 * mw, 2.2)
    lower = _gauss(x, y, cx, my + 2.6, 0.7 * mw, 2.6)
    corners = np.exp(-0.5 * ((x - cx) / mw) ** 8)
    h = h + lip * (upper + lower) - 1.5 * corners * np.exp(-0.5 * ((y - my) / 0.8) ** 2)
    h = h + (4.0 + 1.3 * p["chin_protrusion"]) * _gauss(x, y, cx, cy + 0.84 * b, 10.0 + 2.0 * p["chin_width"], 6.0)
    h = np.where(r2 < 1.0, h, 0.0)

    # ---- albedo
    tone = 1.0 / (1.0 + np.exp(-0.9 * z[:, _P["skin_tone"]]))
    dark, light = np.array([0.36, 0.22, 0.15]), np.array([0.93, 0.76, 0.66])
    skin = dark[None] + tone[:, None] * (light - dark)[None]
    warm = 0.04 * z[:, _P["skin_warmth"]]
    skin = skin * (1.0 + np.stack([warm, 0.2 * warm, -warm], 1))
    skin = skin[:, None, None, :].astype(np.float32)
    tex = np.tensordot(z[:, _TEXTURE], _texture_basis(size), axes=(1, 0)) / 4.0
    alb = skin * (1.0 + 0.07 * tex)[..., None]
    blush = (0.5 + 0.25 * p["blush"]) * sum(_gauss(x, y, cx + s * 24.0, ch_y + 2.0, 8.0, 6.0) for s in (-1, 1))
    alb = alb * (1.0 + 0.12 * blush[..., None] * np.array([1.0, -0.4, -0.4], np.float32))

    hair_t = 0.5 + 0.5 * np.tanh(z[:, _P["hair_colour"]])
    hair_rgb = (np.array([0.06, 0.05, 0.045])[None] + hair_t[:, None] * np.array([0.5, 0.36, 0.2])[None])
    hair_rgb = hair_rgb[:, None, None, :].astype(np.float32)
    hairline = 14.0 + 3.0 * p["hairline"] + 0.012 * (x - cx) ** 2
    side = (np.abs(x - cx) > 0.86 * a) & (y < ey - 2.0)
    strands = 1.0 + 0.18 * np.sin(1.7 * x + 3.0 * np.sin(0.15 * y)) * (1.0 + 0.5 * tex)
    hair = np.maximum(_smoothstep(hairline + 2.0, hairline - 2.0, y), side.astype(np.float32))
    alb = alb + hair[..., None] * (hair_rgb * strands[..., None] - alb)

    beard = np.clip(0.8 * (p["beard"] - 1.0), 0.0, 0.8)
    beard_zone = _smoothstep(ny + 4.0, ny + 12.0, y) * (1.0 - 0.8 * (upper + lower))
    beard_zone = beard_zone * (1.0 + 0.2 * tex) * beard
    alb = alb + np.clip(beard_zone, 0, 1)[..., None] * (hair_rgb - alb)

    brow_dark = 0.55 + 0.15 * np.tanh(p["brow_darkness"])
    brow_th = 2.0 + 0.4 * p["brow_thickness"]
    for s in (-1.0, 1.0):
        bx = cx + s * ex
        arch = ey - brow_off - 1.0 + 0.018 * (x - bx) ** 2
        band = np.exp(-0.5 * ((y - arch) / brow_th) ** 2) * np.exp(-0.5 * ((x - bx - s * 1.5) / 8.5) ** 4)
        alb = alb + (brow_dark * band)[..., None] * (hair_rgb - alb)

    iris_t = np.tanh(z[:, _P["iris_colour"]])
    brown, blue = np.array([0.30, 0.18, 0.10]), np.array([0.25, 0.40, 0.55])
    it = iris_t[:, None]
    iris_rgb = np.where(it > 0, brown + it * (blue - brown), brown * (1 + 0.5 * it))
    iris_rgb = iris_rgb[:, None, None, :].astype(np.float32)
    sclera = np.array([0.86, 0.83, 0.80], np.float32)
    for s in (-1.0, 1.0):
        dx, dy = x - (cx + s * ex), y - ey
        alb = alb + _soft_disc((dx / 6.5) ** 2 + (dy / 2.8) ** 2)[..., None] * (sclera - alb)
        alb = alb + _soft_disc((dx / 2.7) ** 2 + (dy / 2.7) ** 2, 0.3)[..., None] * (iris_rgb - alb)
        alb = alb * (1.0 - 0.85 * _soft_disc((dx / 1.1) ** 2 + (dy / 1.1) ** 2, 0.4))[..., None]
        nostril = _soft_disc(((x - cx - s * 3.2) / 2.0) ** 2 + ((y - ny - 2.5) / 1.2) ** 2, 0.5)
        alb = alb * (1.0 - 0.45 * nostril)[..., None]

    lip_rgb = skin * (np.array([0.95, 0.55, 0.55], np.float32) + 0.08 * p["lip_colour"][..., None])
    lips = np.clip(1.6 * (upper + lower) - 0.3, 0.0, 1.0) * corners
    alb = alb + lips[..., None] * (lip_rgb - alb)
    alb = alb * (1.0 - 0.5 * corners * np.exp(-0.5 * ((y - my) / 0.7) ** 2))[..., None]

    alpha = _soft_disc(r2, 0.03)
    lm = np.stack([
        np.stack([cx - ex[:, 0, 0], ey[:, 0, 0]], -1),
        np.stack([cx + ex[:, 0, 0], ey[:, 0, 0]], -1),
        np.stack([np.full_like(ny[:, 0, 0], cx), ny[:, 0, 0]], -1),
        np.stack([cx - mw[:, 0, 0], my[:, 0, 0]], -1),
        np.stack([cx + mw[:, 0, 0], my[:, 0, 0]], -1),
    ], 1)
    return FaceMaps(
        size=size,
        height=np.ascontiguousarray(h, dtype=np.float32),
        albedo=np.ascontiguousarray(np.clip(alb, 0.0, 1.0), dtype=np.float32),
        alpha=np.ascontiguousarray(np.broadcast_to(alpha, h.shape), dtype=np.float32),
        landmarks=lm.astype(np.float32),
    )


# --------------------------------------------------------------------------- warping
def _scan(q: np.ndarray, size: int, negative: np.ndarray):
    """Inverse of a 1-D projection with occlusion, for a batch of rows.

    With a positive rotation the samples nearer the camera come first in a row, so sample
    ``i`` is visible iff ``q[i] > max(q[:i])`` and the surface seen by output pixel ``j``
    lies on the segment where the running maximum ``m`` first reaches ``j``
    (``m[i1 - 1] < j <= m[i1]``). Rows with a negative angle are mirrored first.

    Args:
        q: (R, N) float32 projected output-pixel position of each surface sample of a row.
        size: number of output pixels per row (at positions 0..size-1).
        negative: (R,) bool, rows whose rotation angle is negative.

    Returns:
        ``(f0, f1, t, valid)``, each (R, size): the visible surface point of output pixel
        ``j`` lies between samples ``f0`` and ``f1`` (indices into ``q.ravel()``) at
        fraction ``t``.
    """
    r, n = q.shape
    qt = torch.from_numpy(np.ascontiguousarray(q, np.float32))
    neg = torch.from_numpy(np.flatnonzero(negative))
    if neg.numel():
        qt[neg] = (size - 1) - qt[neg].flip(1)
    m = torch.cummax(qt, dim=1).values
    j = torch.arange(size, dtype=qt.dtype).expand(r, size).contiguous()
    i1 = torch.searchsorted(m, j)
    valid = (i1 >= 1) & (i1 <= n - 1)
    i1.clamp_(1, n - 1)
    q0 = torch.gather(qt, 1, i1 - 1)
    q1 = torch.gather(qt, 1, i1)
    t = ((j - q0) / (q1 - q0).clamp_min(1e-6)).clamp_(0.0, 1.0)
    i0 = i1 - 1
    if neg.numel():
        i0[neg], i1[neg] = (n - 1) - i0[neg].flip(1), (n - 1) - i1[neg].flip(1)
        t[neg] = t[neg].flip(1)
        valid[neg] = valid[neg].flip(1)
    rows = (torch.arange(r, dtype=torch.int64) * n)[:, None]
    return (i0 + rows).numpy(), (i1 + rows).numpy(), t.numpy(), valid.numpy()


def _lerp(a: np.ndarray, f0, f1, t) -> np.ndarray:
    flat = a.ravel()
    lo = flat[f0]
    return lo + t * (flat[f1] - lo)


def _bilinear(maps: np.ndarray, fx: np.ndarray, fy: np.ndarray) -> np.ndarray:
    """Sample channel-first (B, C, H, W) float32 ``maps`` at fractional pixel indices (B, P) -> (C, B, P).

    Bilinear, clamped at the map's border (torch's ``grid_sample`` as the gather kernel).
    """
    bsz, c, hgt, wid = maps.shape
    grid = np.empty((bsz, 1, fx.shape[1], 2), np.float32)
    grid[:, 0, :, 0] = fx * (2.0 / (wid - 1)) - 1.0
    grid[:, 0, :, 1] = fy * (2.0 / (hgt - 1)) - 1.0
    with torch.no_grad():
        out = torch.nn.functional.grid_sample(torch.from_numpy(np.ascontiguousarray(maps, np.float32)),
                                              torch.from_numpy(grid), mode="bilinear",
                                              padding_mode="border", align_corners=True)
    return out[:, :, 0, :].permute(1, 0, 2).numpy()


def render_batch(
    maps: FaceMaps,
    index: np.ndarray,
    yaw: np.ndarray,
    pitch: np.ndarray,
    roll: np.ndarray,
    expression: np.ndarray,
    ambient: np.ndarray,
    diffuse: np.ndarray,
    direction: np.ndarray,
    colour: np.ndarray,
    background: np.ndarray,
) -> Dict[str, np.ndarray]:
    """Render B posed, lit views of the identities in ``maps``.

    Args:
        maps: :class:`FaceMaps` of K identities.
        index: (B,) int, the identity (row of ``maps``) of each view.
        yaw, pitch, roll: (B,) degrees (see :func:`rotation_matrix`).
        expression: (B, 3) coefficients for :data:`EXPRESSION_NAMES`.
        ambient, diffuse: (B,) light intensities.
        direction: (B, 3) unit light directions (camera frame).
        colour: (B, 3) light colour.
        background: (B, S, S, 3) float32 background image in [0, 1].

    Returns:
        dict of ``image`` (B, S, S, 3) float32 in [0, 1], ``depth`` (B, S, S) float32
        (:func:`depth_from_height`, 0 on background), ``mask`` (B, S, S) bool and
        ``landmarks`` (B, 5, 2) float32 output-pixel coordinates.
    """
    size = maps.size
    index = np.asarray(index, np.int64)
    bsz = index.size
    g = _grid(size)
    n = g.size
    m = _margin(size)
    cx, cy, cz = (float(v) for v in HEAD_CENTRE)
    yaw, pitch, roll = (np.asarray(v, np.float64).reshape(bsz) for v in (yaw, pitch, roll))
    rot = np.stack([rotation_matrix(*angles) for angles in zip(yaw, pitch, roll)]).astype(np.float32)

    # shading in the canonical frame: n_cam . l = n_can . (R^T l), n_can ~ (-h_x, -h_y, 1)
    basis, cavity = _expression_basis(size)
    expression = np.asarray(expression, np.float32).reshape(bsz, len(EXPRESSION_NAMES))
    height = maps.height[index] + np.tensordot(expression, basis, axes=(1, 0))
    grad_y, grad_x = np.gradient(height, TEMPLATE_SIZE / size, axis=(1, 2))
    lcan = np.einsum("bji,bj->bi", rot, np.asarray(direction, np.float32).reshape(bsz, 3))[:, :, None, None]
    lam = (lcan[:, 2] - grad_x * lcan[:, 0] - grad_y * lcan[:, 1]) / np.sqrt(1.0 + grad_x ** 2 + grad_y ** 2)
    shade = np.asarray(ambient, np.float32).reshape(bsz, 1, 1) + \
        np.asarray(diffuse, np.float32).reshape(bsz, 1, 1) * np.maximum(lam, 0.0)
    shade *= 1.0 - 0.85 * np.clip(expression[:, 1, None, None] * cavity[None], 0.0, 1.0)
    tint = np.asarray(colour, np.float32).reshape(bsz, 1, 1, 3)
    canon = np.empty((bsz, 4) + height.shape[1:], np.float32)
    canon[:, :3] = np.moveaxis(maps.albedo[index] * (shade[..., None] * tint), -1, 1)
    canon[:, 3] = maps.alpha[index]
    del grad_x, grad_y, lam, shade

    # pass 1: pitch, along columns (rows of the transposed height map)
    th = -np.deg2rad(pitch)[:, None, None]
    cos, sin = np.cos(th).astype(np.float32), np.sin(th).astype(np.float32)
    hc = height.transpose(0, 2, 1) - np.float32(cz)
    sc = (g - np.float32(cy))[None, None, :]
    proj = _to_pixel(cy + cos * sc + sin * hc, size)
    z1 = cz - sin * sc + cos * hc
    f0, f1, t, valid = _scan(proj.reshape(bsz * n, n), size, np.repeat(th[:, 0, 0] < 0, n))
    ycan = _lerp(np.broadcast_to(g, (bsz * n, n)), f0, f1, t)
    z1 = np.where(valid, _lerp(z1, f0, f1, t), 0.0)
    # (B, Gx, S) -> rows indexed by output y, samples along canonical x
    ycan, z1, v1 = (a.reshape(bsz, n, size).transpose(0, 2, 1).reshape(bsz * size, n)
                    for a in (ycan, z1, valid.astype(np.float32)))

    # pass 2: yaw, along rows
    th = np.repeat(np.deg2rad(yaw), size)[:, None]
    cos, sin = np.cos(th).astype(np.float32), np.sin(th).astype(np.float32)
    sc = (g - np.float32(cx))[None, :]
    zc = z1 - np.float32(cz)
    proj = _to_pixel(cx + cos * sc + sin * zc, size)
    z2 = cz - sin * sc + cos * zc
    f0, f1, t, valid = _scan(proj, size, th[:, 0] < 0)
    stage = np.stack([
        _lerp(np.broadcast_to(g, (bsz * size, n)), f0, f1, t),
        _lerp(ycan, f0, f1, t),
        _lerp(z2, f0, f1, t),
        np.where(valid, _lerp(v1, f0, f1, t), 0.0),
    ]).astype(np.float32).reshape(4, bsz, size * size)

    # roll: in-plane rotation of the rendered maps about the head centre
    rolled = np.flatnonzero(roll != 0)
    if rolled.size:
        pix = (np.arange(size) + 0.5) * (TEMPLATE_SIZE / size) - 0.5
        uu, vv = np.meshgrid(pix, pix)
        r = np.deg2rad(roll[rolled])[:, None]
        du, dv = uu.ravel()[None] - cx, vv.ravel()[None] - cy
        xr, yr = cx + np.cos(r) * du + np.sin(r) * dv, cy - np.sin(r) * du + np.cos(r) * dv
        stage[:, rolled] = _bilinear(stage.reshape(4, bsz, size, size)[:, rolled].transpose(1, 0, 2, 3),
                                     _to_pixel(xr, size), _to_pixel(yr, size))

    xcan, ycan, z, cover = stage
    face = _bilinear(canon, _to_pixel(xcan, size) + m, _to_pixel(ycan, size) + m)
    alpha = np.clip(face[3] * np.clip(cover, 0.0, 1.0), 0.0, 1.0)
    bg = np.asarray(background, np.float32).reshape(bsz, -1, 3).transpose(2, 0, 1)
    image = np.clip(bg + alpha[None] * (face[:3] - bg), 0.0, 1.0).transpose(1, 2, 0)
    mask = alpha > 0.5
    depth = np.where(mask, depth_from_height(z), 0.0).astype(np.float32)

    lm = maps.landmarks[index].astype(np.float64)
    lm_px = _to_pixel(lm, size) + m
    lm_h = _bilinear(height[:, None], lm_px[..., 0], lm_px[..., 1])[0]
    pts = np.concatenate([lm, lm_h[..., None]], -1) - HEAD_CENTRE
    pts = np.einsum("bij,bkj->bki", rot.astype(np.float64), pts) + HEAD_CENTRE
    landmarks = _to_pixel(pts[..., :2], size).astype(np.float32)

    shape = (bsz, size, size)
    return {
        "image": image.reshape(shape + (3,)).astype(np.float32),
        "depth": depth.reshape(shape),
        "mask": mask.reshape(shape),
        "landmarks": landmarks,
    }
