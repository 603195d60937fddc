"""The angle of a cosine, for every angular-margin head.

``acos`` has an infinite slope at +-1, so the cosine is clamped to ``+-(1 - ACOS_EPS)`` first;
every head that adds an angle (ArcFace, CurricularFace, MagFace, AdaFace, ElasticFace, the
``arc`` hard-negative heads) goes through :func:`angle` and :func:`cos_plus`.
"""
from __future__ import annotations

from typing import Union

import torch

__all__ = ["ACOS_EPS", "angle", "cos_plus"]

ACOS_EPS = 1e-6


def angle(c: torch.Tensor) -> torch.Tensor:
    """``theta = acos(c)``, with ``c`` clamped inside (-1, 1)."""
    return torch.acos(c.clamp(-1.0 + ACOS_EPS, 1.0 - ACOS_EPS))


def cos_plus(c: torch.Tensor, m: Union[float, torch.Tensor]) -> torch.Tensor:
    """``cos(acos(c) + m)``: the cosine with the angular margin ``m`` added (see :func:`angle`)."""
    return torch.cos(angle(c) + m)
