"""Gradient clipping that does not favour a logit scale (:class:`GradClipper`; see the package's docstring),
and the ``clip`` setting (:func:`parse_clip`)."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence, Union

import numpy as np
import torch

__all__ = ["parse_clip", "GradClipper"]


def parse_clip(clip: Union[str, float]) -> Union[str, float]:
    """``"scaled"``, ``"off"`` or a positive float from a setting or a CLI string."""
    if isinstance(clip, str):
        key = clip.strip().lower()
        if key in ("scaled", "off"):
            return key
        try:
            clip = float(key)
        except ValueError:
            raise ValueError(f"clip must be 'scaled', 'off' or a positive number, got {clip!r}") from None
    if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not (math.isfinite(clip) and clip > 0):
        raise ValueError(f"clip must be 'scaled', 'off' or a positive number, got {clip!r}")
    return float(clip)


class GradClipper:
    """Gradient-norm clipping of ``params``; records every step's norm and whether it was cut.

    Args:
        mode: ``"scaled"`` (max norm ``factor * g0``, ``g0`` the norm of the first call),
            ``"off"`` or a fixed max norm (float).
        factor: see ``mode``.
    """

    def __init__(self, mode: Union[str, float], factor: float = 0.1) -> None:
        self.mode = parse_clip(mode)
        self.factor = float(factor)
        self.norms: List[float] = []
        self.clipped: List[bool] = []

    def threshold(self, norm: float) -> float:
        """Max norm for a step whose unclipped norm is ``norm``."""
        if self.mode == "off":
            return math.inf
        if self.mode == "scaled":
            return self.factor * (self.norms[0] if self.norms else norm)
        return float(self.mode)

    def __call__(self, params: Sequence[torch.Tensor]) -> float:
        """Clip in place; returns the norm before clipping."""
        grads = [p.grad for p in params if p.grad is not None]
        norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])))
        limit = self.threshold(norm)
        if math.isfinite(limit) and norm > limit:  # as clip_grad_norm_: scale by limit / (norm + 1e-6)
            for g in grads:
                g.mul_(limit / (norm + 1e-6))
        self.norms.append(norm)
        self.clipped.append(bool(math.isfinite(limit) and norm > limit))
        return norm

    def activity(self) -> Dict[str, Any]:
        """Fraction of steps clipped, overall and over the last quarter of the steps; the threshold."""
        c = np.asarray(self.clipped, dtype=bool)
        last = c[-max(1, len(c) // 4):] if len(c) else c
        limit = self.threshold(self.norms[0]) if self.norms else math.nan
        return {"mode": self.mode, "factor": self.factor if self.mode == "scaled" else None,
                "threshold": limit if math.isfinite(limit) else None,
                "fraction": float(c.mean()) if len(c) else 0.0,
                "fraction_last_quarter": float(last.mean()) if len(last) else 0.0,
                "median_norm": float(np.median(self.norms)) if self.norms else math.nan}
