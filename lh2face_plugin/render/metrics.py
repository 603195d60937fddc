"""Reconstruction quality against ground truth, after Unsup3d's synthetic-face protocol.

- SIDE, the scale-invariant depth error (Eigen et al., NeurIPS 2014):
  ``sqrt(mean(e^2) - mean(e)^2)`` with ``e = log d_pred - log d_gt`` over the face
  pixels of one image, averaged over images. Depths are distances from the camera.
- MAD, the mean angle deviation in degrees between the normals of the predicted
  and of the ground-truth depth map over the face pixels, averaged over images.
- Frontalisation error: mean absolute difference in ``[0, 1]`` intensity units
  between a canonical face and the ground-truth frontal image over its face pixels.

Unsup3d reports SIDE 0.793e-2 and MAD 16.51 degrees on its synthetic faces
(Wu et al., CVPR 2020); its data differ from ours, so the numbers only say the
order of magnitude to expect.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .renderer import Renderer

__all__ = ["side", "mad", "frontal_error", "erode"]


def _check(name: str, t: Tensor, like: Tensor) -> None:
    if t.shape != like.shape:
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(like.shape)}")


def erode(mask: Tensor, pixels: int = 2) -> Tensor:
    """Shrink a ``(B, 1, H, W)`` mask by ``pixels`` (the boundary has no reliable normals)."""
    if pixels <= 0:
        return mask.bool()
    k = 2 * pixels + 1
    return (-F.max_pool2d(-mask.float(), k, 1, pixels)) > 0.5


def side(pred: Tensor, gt: Tensor, mask: Tensor) -> Tensor:
    """Per-image scale-invariant depth error.

    Args:
        pred, gt: ``(B, 1, H, W)`` positive camera distances.
        mask: ``(B, 1, H, W)`` bool pixels that count.

    Returns:
        ``(B,)``.
    """
    _check("gt", gt, pred)
    _check("mask", mask, pred)
    m = mask.double()
    n = m.sum(dim=(1, 2, 3)).clamp_min(1)
    e = torch.log(pred.double().clamp_min(1e-6)) - torch.log(gt.double().clamp_min(1e-6))
    mean = (e * m).sum(dim=(1, 2, 3), keepdim=True) / n.view(-1, 1, 1, 1)
    var = (((e - mean) * m) ** 2).sum(dim=(1, 2, 3)) / n
    return var.sqrt().to(pred.dtype)


def mad(pred: Tensor, gt: Tensor, mask: Tensor, renderer: Renderer) -> Tensor:
    """Per-image mean normal-angle deviation in degrees.

    Args:
        pred, gt: ``(B, 1, H, W)`` depths relative to the pivot plane, the
            convention of :class:`Renderer` (whose camera turns them into normals).
        mask: ``(B, 1, H, W)`` bool pixels that count.

    Returns:
        ``(B,)``.
    """
    _check("gt", gt, pred)
    _check("mask", mask, pred)
    cos = (renderer.normals(pred) * renderer.normals(gt)).sum(1, keepdim=True).clamp(-1, 1)
    ang = torch.rad2deg(torch.acos(cos))
    m = mask.float()
    return (ang * m).sum(dim=(1, 2, 3)) / m.sum(dim=(1, 2, 3)).clamp_min(1)


def frontal_error(canonical: Tensor, frontal: Tensor, mask: Tensor) -> Tensor:
    """Per-image mean absolute error over ``mask``.

    Args:
        canonical, frontal: ``(B, 3, H, W)`` in ``[0, 1]``.
        mask: ``(B, 1, H, W)`` bool face pixels of ``frontal``.

    Returns:
        ``(B,)``.
    """
    _check("frontal", frontal, canonical)
    m = mask.float()
    err = (canonical - frontal).abs().mean(1, keepdim=True) * m
    return err.sum(dim=(1, 2, 3)) / m.sum(dim=(1, 2, 3)).clamp_min(1)
