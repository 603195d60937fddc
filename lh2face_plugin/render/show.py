"""Pictures of what the render module sees: input | canonical face | depth | re-rendered input."""
from __future__ import annotations

import os
from typing import List, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..fileio import save_figure
from ..images import read
from .module import RenderInputModule

__all__ = ["load_face", "render_panels", "save_grid"]

COLUMNS = ("input", "canonical face", "depth", "re-rendered input")


def load_face(path: str, landmarks: Optional[Sequence[float]] = None, size: int = 112) -> np.ndarray:
    """Read an image as an aligned ``(size, size, 3)`` uint8 RGB face.

    Args:
        path: image file.
        landmarks: 10 numbers, the 5 ArcFace landmarks (eyes, nose, mouth corners) as
            x, y pairs in the image; the face is aligned with insightface's
            ``norm_crop``. Without them an image already ``size x size`` is used as
            is, and a larger one is centre-cropped to a square and resized (a
            stand-in for alignment, fine for roughly centred portraits).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image {path!r} does not exist")
    img = read(path, "rgb")
    if landmarks is not None:
        pts = np.asarray(landmarks, dtype=np.float32)
        if pts.size != 10:
            raise ValueError(f"landmarks must be 10 numbers (5 x, y pairs), got {pts.size}")
        from insightface.utils.face_align import norm_crop  # optional: heavy

        return np.ascontiguousarray(norm_crop(img, pts.reshape(5, 2), image_size=size))
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = Image.fromarray(img[top : top + side, left : left + side])
    return np.asarray(crop.resize((size, size), Image.BILINEAR))


def to_tensor(faces: Sequence[np.ndarray]) -> Tensor:
    """``(B, 3, H, W)`` float in ``[-1, 1]`` from uint8 RGB ``(H, W, 3)`` arrays."""
    arr = np.stack([np.asarray(f) for f in faces]).astype(np.float32)
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1


@torch.no_grad()
def render_panels(module: RenderInputModule, images: Tensor) -> List[List[np.ndarray]]:
    """One row per face: the four panels as float images in ``[0, 1]`` (depth as a 2D map)."""
    was_training = module.training
    module.eval()
    try:
        out = module(images)
        views = module.rerender(out)["view"]
    finally:
        module.train(was_training)
    rows = []
    for i in range(images.shape[0]):
        rows.append([
            ((images[i] + 1) / 2).permute(1, 2, 0).clamp(0, 1).numpy(),
            ((out["canonical"][i] + 1) / 2).permute(1, 2, 0).clamp(0, 1).numpy(),
            out["depth"][i, 0].numpy(),
            views[i].permute(1, 2, 0).clamp(0, 1).numpy(),
        ])
    return rows


def save_grid(rows: List[List[np.ndarray]], path: str, labels: Optional[Sequence[str]] = None) -> str:
    """Draw rows of panels (depth: near = bright) and write a PNG atomically; returns ``path``."""
    import matplotlib  # optional: heavy

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # optional: heavy

    if not rows:
        raise ValueError("nothing to draw: no faces given")
    fig, axes = plt.subplots(len(rows), len(COLUMNS), figsize=(2.2 * len(COLUMNS), 2.3 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            ax = axes[r][c]
            if panel.ndim == 2:
                ax.imshow(-panel, cmap="magma")
            else:
                ax.imshow(panel)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(COLUMNS[c], fontsize=9)
        if labels is not None:
            axes[r][0].set_ylabel(labels[r], fontsize=8)
    fig.tight_layout()
    return save_figure(fig, os.fspath(path), dpi=110)
