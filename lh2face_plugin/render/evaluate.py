"""Depth and frontalisation quality of a render module on synthetic faces with ground truth.

The synthetic faces (:mod:`lh2face_plugin.data.synthetic`) come from an orthographic
camera with depth in image widths, ``z`` towards the camera, a head rotating about
``HEAD_CENTRE`` and yaw/pitch signs opposite to ours; :func:`to_renderer_depth` and
:func:`to_renderer_view` translate them into the :mod:`.renderer` conventions.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ..data.face3d import CAMERA_DISTANCE, HEAD_CENTRE, TEMPLATE_SIZE, rotation_matrix as synthetic_rotation
from ..data.synthetic import make_identities, render_face
from .metrics import erode, frontal_error, mad, side
from .module import RenderInputModule
from .renderer import Renderer

__all__ = ["to_renderer_depth", "to_renderer_view", "synthetic_eval_set", "evaluate", "format_table"]


def to_renderer_depth(depth: np.ndarray, mask: np.ndarray) -> Tensor:
    """Synthetic depth ``(B, H, W)`` (image widths from the camera plane, 0 off the face)
    -> renderer depth ``(B, 1, H, W)`` (half widths behind the pivot plane, 0 off the face)."""
    z = 2.0 * (np.asarray(depth, np.float32) - CAMERA_DISTANCE)
    return torch.from_numpy(np.where(mask, z, 0.0).astype(np.float32)).unsqueeze(1)


def to_renderer_view(yaw: Sequence[float], pitch: Sequence[float], roll: Optional[Sequence[float]] = None) -> Tensor:
    """Synthetic poses in degrees -> renderer viewpoints ``(B, 6)``.

    The synthetic rotation ``R_s`` (``face3d.rotation_matrix``, ``z`` towards the camera)
    is ``F R_s F`` with ``F = diag(1, 1, -1)`` in our frame, decomposed as
    ``R_z(roll) R_x(pitch) R_y(yaw)``; the synthetic head turns about ``HEAD_CENTRE``
    and rotating about a point ``c`` instead of the origin is the translation
    ``t = c - R c``.
    """
    yaw = np.asarray(yaw, np.float64).reshape(-1)
    pitch = np.asarray(pitch, np.float64).reshape(-1)
    roll = np.zeros_like(yaw) if roll is None else np.asarray(roll, np.float64).reshape(-1)
    flip = np.diag([1.0, 1.0, -1.0])
    rot = np.stack([flip @ synthetic_rotation(a, b, c) @ flip for a, b, c in zip(yaw, pitch, roll)])
    angles = np.stack([
        np.arctan2(-rot[:, 2, 0], rot[:, 2, 2]),
        np.arcsin(np.clip(rot[:, 2, 1], -1, 1)),
        np.arctan2(-rot[:, 0, 1], rot[:, 1, 1]),
    ], axis=1)
    c = (np.asarray(HEAD_CENTRE, np.float64) + 0.5) * 2 / TEMPLATE_SIZE - 1
    c[2] = 0.0
    t = c[None] - rot @ c
    return torch.from_numpy(np.concatenate([angles, t], axis=1).astype(np.float32))


def synthetic_eval_set(
    num: int = 32, *, min_yaw: float = 15.0, max_yaw: float = 45.0, light: Optional[str] = "random", seed: int = 1234
) -> Dict[str, Tensor]:
    """Yawed synthetic faces with ground truth, ``num`` identities, one view each.

    Args:
        light: ``"random"`` (and a random background) or ``None`` for the neutral light
            and black background of the frontal images.

    Returns:
        dict of ``images`` ``(B, 3, 112, 112)`` in ``[-1, 1]``, ``depth`` (renderer
        convention) and ``mask`` ``(B, 1, H, W)`` of the view, ``frontal`` ``(B, 3, H, W)``
        in ``[0, 1]``, ``frontal_mask`` and ``canonical_depth`` ``(B, 1, H, W)`` of the
        frontal pose, ``view`` ``(B, 6)`` ground-truth viewpoints.
    """
    rng = np.random.default_rng(seed)
    ids = make_identities(num=num, seed=seed)
    yaws = rng.uniform(min_yaw, max_yaw, size=num) * rng.choice([-1.0, 1.0], size=num)
    views = [
        render_face(ident, yaw=float(yaw), light=light, background=light, seed=int(rng.integers(2**31)))
        for ident, yaw in zip(ids, yaws)
    ]

    def stack(name: str) -> np.ndarray:
        return np.stack([getattr(s, name) for s in views])

    return {
        "images": torch.from_numpy(stack("image").astype(np.float32)).permute(0, 3, 1, 2) / 127.5 - 1,
        "depth": to_renderer_depth(stack("depth"), stack("mask")),
        "mask": torch.from_numpy(stack("mask")).unsqueeze(1),
        "frontal": torch.from_numpy(stack("frontal").astype(np.float32)).permute(0, 3, 1, 2) / 255,
        "frontal_mask": torch.from_numpy(stack("frontal_mask")).unsqueeze(1),
        "canonical_depth": to_renderer_depth(stack("frontal_depth"), stack("frontal_mask")),
        "view": to_renderer_view(yaws, np.zeros(num)),
    }


@torch.no_grad()
def evaluate(module: RenderInputModule, data: Dict[str, Tensor], batch_size: int = 32) -> Dict[str, Dict[str, float]]:
    """SIDE, MAD and frontalisation error of ``module`` and of reference predictors.

    Rows of the result: ``"module"``; ``"flat depth"`` (the trivial depth baseline, a
    plane) with ``"no frontalisation"`` (the input itself as canonical face); and
    ``"oracle geometry"``, the renderer fed the ground-truth depth and pose (the
    best this warp can do, self-occlusion and relighting aside).

    SIDE uses camera distances ``D + z`` with ``D`` the module camera's distance
    (``1 / tan(fov / 2)`` half widths, 11.43 at fov 10); MAD uses orthographic normals.
    Depth metrics count the eroded ground-truth face pixels that the predicted warp
    reaches.
    """
    renderer = module.renderer
    distance = renderer.distance if math.isfinite(renderer.distance) else 10.0
    ortho = Renderer(fov=0.0)
    was_training = module.training
    module.eval()
    acc: Dict[str, Dict[str, list]] = {}

    def add(row: str, key: str, values: Tensor) -> None:
        acc.setdefault(row, {}).setdefault(key, []).append(values)

    try:
        n = data["images"].shape[0]
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            images, gt, mask = data["images"][sl], data["depth"][sl], erode(data["mask"][sl], 2)
            frontal, fmask = data["frontal"][sl], erode(data["frontal_mask"][sl], 1)
            out = module(images)
            rec = out["aux"]["reconstruction"]
            pred, valid = renderer.view_depth(rec.depth, rec.view)
            m = mask & (valid > 0)
            add("module", "side", side(distance + pred, distance + gt, m))
            add("module", "mad", mad(pred, gt, m, ortho))
            add("module", "frontal", frontal_error((out["canonical"] + 1) / 2, frontal, fmask))
            flat = torch.zeros_like(gt)
            add("flat depth / no frontalisation", "side", side(distance + flat, distance + gt, mask))
            add("flat depth / no frontalisation", "mad", mad(flat, gt, mask, ortho))
            add("flat depth / no frontalisation", "frontal", frontal_error((images + 1) / 2, frontal, fmask))
            canon, _ = ortho.frontalise(images, data["canonical_depth"][sl], data["view"][sl])
            add("oracle geometry", "frontal", frontal_error((canon + 1) / 2, frontal, fmask))
    finally:
        module.train(was_training)
    return {row: {k: float(torch.cat(v).mean()) for k, v in cols.items()} for row, cols in acc.items()}


def format_table(result) -> str:
    """Rows of :func:`evaluate` as a text table."""
    lines = [f"{'predictor':32s} {'SIDE x1e2':>10s} {'MAD deg':>8s} {'frontal L1':>11s}"]
    for row, cols in result.items():
        cells = [f"{cols['side'] * 100:10.3f}" if "side" in cols else f"{'-':>10s}",
                 f"{cols['mad']:8.2f}" if "mad" in cols else f"{'-':>8s}",
                 f"{cols['frontal']:11.4f}" if "frontal" in cols else f"{'-':>11s}"]
        lines.append(f"{row:32s} " + " ".join(cells))
    return "\n".join(lines)
