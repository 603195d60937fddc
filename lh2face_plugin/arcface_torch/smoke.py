"""A tiny image folder of random faces-sized images for CPU smoke runs.

arcface_torch's ``rec = "synthetic"`` repeats one image, so every batch holds
identical rows; batch normalisation then maps them to ~0 features and a few
steps produce NaN (with any loss). :func:`random_image_folder` writes distinct
random 112x112 PNGs in arcface_torch's ImageFolder layout
(``root/<class>/<n>.png``) instead.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from ..fileio import atomic_path

__all__ = ["random_image_folder"]


def random_image_folder(root: str, num_classes: int = 16, per_class: int = 1, size: int = 112,
                        seed: int = 0) -> str:
    """Create (once) ``num_classes * per_class`` random RGB PNGs under ``root``.

    Each class has its own mean colour, so the classes are separable. Existing
    files are kept; each new file is written atomically.

    Returns:
        ``root``, for ``config.rec``.
    """
    if num_classes < 1 or per_class < 1:
        raise ValueError(f"num_classes and per_class must be >= 1, got {num_classes}, {per_class}")
    rng = np.random.default_rng(seed)
    for c in range(num_classes):
        folder = os.path.join(root, f"{c:05d}")
        os.makedirs(folder, exist_ok=True)
        base = rng.integers(0, 256, size=3)
        for i in range(per_class):
            noise = rng.integers(-60, 61, size=(size, size, 3))
            path = os.path.join(folder, f"{i:03d}.png")
            if os.path.exists(path):
                continue
            img = np.clip(base + noise, 0, 255).astype(np.uint8)
            with atomic_path(path, suffix=".png") as tmp:
                Image.fromarray(img).save(tmp, format="PNG")
    return root
