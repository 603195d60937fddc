"""Loss terms of the renderer-augmented input module.

- Photometric: Unsup3d's confidence-weighted L1, the negative log-likelihood of a
  Laplacian with per-pixel scale ``sigma``:
  ``l = sqrt(2) |I - I_hat| / sigma + log(sigma)``, averaged over valid pixels.
- Symmetry: the same term for the image re-rendered from the horizontally flipped
  canonical depth and albedo, with its own confidence map (weight ``flip_weight``).
- Identity: ``1 - cos(e(I_hat), e(I))`` through the recognition embedding, so that
  recognition shapes the reconstruction (the target embedding is detached).
- View agreement: ``L_view = 1 - cos(e(I), e(I_canon))``.

``L_reco = photo_weight * photo + flip_weight * flip + identity_weight * identity``; ``L_FR^canon``
is the recognition head's loss on ``e(I_canon)``, computed by the caller.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["photometric_nll", "cosine_distance"]


def photometric_nll(
    pred: Tensor, target: Tensor, confidence: Optional[Tensor] = None, mask: Optional[Tensor] = None
) -> Tensor:
    """Confidence-weighted L1 between images.

    Args:
        pred, target: ``(B, C, H, W)``.
        confidence: ``(B, 1, H, W)`` positive ``sigma``; ``None`` = plain L1.
        mask: ``(B, 1, H, W)`` weights of the pixels that count; ``None`` = all.

    Returns:
        Scalar mean over counted pixels.
    """
    err = (pred - target).abs().mean(dim=1, keepdim=True)
    if confidence is not None:
        err = math.sqrt(2.0) * err / confidence + torch.log(confidence)
    if mask is None:
        return err.mean()
    return (err * mask).sum() / mask.sum().clamp_min(1.0)


def cosine_distance(a: Tensor, b: Tensor) -> Tensor:
    """Mean ``1 - cos(a_i, b_i)`` over rows of ``(N, D)`` embeddings."""
    return (1.0 - F.cosine_similarity(a, b, dim=1, eps=1e-6)).mean()
