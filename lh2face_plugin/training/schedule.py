"""What each step gets: its learning-rate factor (:func:`lr_factor`) and its images and flips
(:func:`batch_plan`), both from the settings and the training seed alone."""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

__all__ = ["lr_factor", "batch_plan"]


def lr_factor(step: int, steps: int, warmup: float = 0.05) -> float:
    """Learning-rate multiplier at ``step`` (0-based): linear warm-up, then ``(1 - progress)^2``."""
    w = max(1, int(warmup * steps)) if warmup > 0 else 0
    if step < w:
        return (step + 1) / w
    return max(0.0, 1.0 - (step - w) / max(1, steps - w)) ** 2


def batch_plan(num_images: int, steps: int, batch_size: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Image indices and flip flags of every step, from the training seed only.

    Epochs are permutations of the images; the last incomplete batch of an epoch is dropped
    (as ``DataLoader(drop_last=True)``).

    Returns:
        ``indices`` (steps, batch_size) int64 and ``flips`` (steps, batch_size) bool.
    """
    if batch_size > num_images:
        raise ValueError(f"batch_size {batch_size} is larger than the training set ({num_images} images)")
    rng = np.random.default_rng([int(seed), 0x62617463])
    per_epoch = num_images // batch_size
    rows: List[np.ndarray] = []
    while len(rows) < steps:
        perm = rng.permutation(num_images)
        rows += [perm[i * batch_size:(i + 1) * batch_size] for i in range(min(per_epoch, steps - len(rows)))]
    flips = rng.random((steps, batch_size)) < 0.5
    return np.stack(rows).astype(np.int64), flips
