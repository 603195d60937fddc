"""Per-image nuisance (pose, light, expression, background, degradation) and clean renders of it."""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import face3d
from ..face3d import EXPRESSION_NAMES, NEUTRAL_LIGHT, Light
from .quality import Degradation, quality_score, sample_degradation

__all__ = ["Views", "VIEW_FIELDS", "random_light", "random_expression", "random_background", "render_views",
           "frontal_views", "backgrounds"]

VIEW_FIELDS = ("yaw", "pitch", "roll", "expression", "ambient", "diffuse", "direction", "colour",
                "bg_colour", "bg_gradient")


def random_light(rng: np.random.Generator) -> Light:
    """A random light (direction, ambient and diffuse strength, colour)."""
    az, el = np.deg2rad(rng.uniform(-70, 70)), np.deg2rad(rng.uniform(-30, 50))
    direction = (math.sin(az) * math.cos(el), -math.sin(el), math.cos(az) * math.cos(el))
    colour = tuple(float(c) for c in np.clip(1.0 + rng.normal(0, 0.06, 3), 0.8, 1.2))
    return Light(float(rng.uniform(0.25, 0.6)), float(rng.uniform(0.35, 0.8)), direction, colour)


def random_expression(rng: np.random.Generator) -> np.ndarray:
    """Random coefficients of ``EXPRESSION_NAMES``."""
    smile = rng.uniform(0, 1) * (rng.random() < 0.5)
    mouth = rng.uniform(0, 0.8) * (rng.random() < 0.3)
    brow = np.clip(rng.normal(0, 0.5), -1, 1)
    return np.array([smile, mouth, brow], np.float32)


def random_background(rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """A random background colour and gradient."""
    colour = rng.uniform(0.1, 0.9) + rng.normal(0, 0.08, 3)
    angle = rng.uniform(0, 2 * np.pi)
    return np.clip(colour, 0, 1).astype(np.float32), \
        (rng.uniform(0, 0.3) * np.array([np.cos(angle), np.sin(angle)])).astype(np.float32)


class Views:
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
        self.expression[i] = random_expression(rng)
        self.set_light(i, random_light(rng))
        self.bg_colour[i], self.bg_gradient[i] = random_background(rng)
        self.degradation[i] = sample_degradation(rng) if degrade else None
        self.noise_seed[i] = rng.integers(2 ** 62)

    def subset(self, idx: Sequence[int]) -> "Views":
        idx = np.asarray(idx, np.int64)
        out = Views(idx.size)
        for name in ("ident", "noise_seed") + VIEW_FIELDS:
            setattr(out, name, getattr(self, name)[idx])
        out.degradation = [self.degradation[i] for i in idx]
        return out

    def quality(self) -> np.ndarray:
        return np.array([quality_score(d) for d in self.degradation], np.float32)


def backgrounds(views: Views, size: int) -> np.ndarray:
    """``(n, S, S, 3)`` background images of ``views``."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    gx, gy = views.bg_gradient[:, 0, None, None, None], views.bg_gradient[:, 1, None, None, None]
    ramp = gx * c[None, None, :, None] + gy * c[None, :, None, None]
    return np.clip(views.bg_colour[:, None, None, :] + ramp, 0.0, 1.0)


def render_views(maps: face3d.FaceMaps, views: Views, batch: int = 32) -> Dict[str, np.ndarray]:
    """Clean renders of ``views`` (no degradation), in sub-batches of ``batch``."""
    parts = []
    for s in range(0, views.n, batch):
        v = views.subset(range(s, min(s + batch, views.n)))
        parts.append(face3d.render_batch(maps, v.ident, v.yaw, v.pitch, v.roll, v.expression, v.ambient,
                                         v.diffuse, v.direction, v.colour, backgrounds(v, maps.size)))
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    out["image"] = np.rint(out["image"] * 255.0).astype(np.uint8)
    return out


def frontal_views(views: Views) -> Views:
    """The canonical views of the same identities (frontal, neutral, no degradation)."""
    front = Views(views.n)
    front.ident = views.ident.copy()
    return front
