"""The training curves of several runs in one figure (:func:`plot_training`)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..fileio import atomic_path

__all__ = ["plot_training"]


def plot_training(histories: Mapping[str, Mapping[str, Sequence[float]]], path: str) -> str:
    """Loss, training accuracy, mean feature norm and gradient norm per run (PNG, atomic)."""
    import matplotlib  # optional: heavy

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # optional: heavy

    fig = Figure(figsize=(12, 6.5), dpi=100)
    axes = [fig.add_subplot(2, 2, i + 1) for i in range(4)]
    panels = (("loss", "training loss (head's own scale)"), ("accuracy", "training accuracy (argmax cosine)"),
              ("norm", "mean raw feature norm |z|"), ("grad_norm", "backbone gradient norm (before clipping)"))
    for ax, (key, title) in zip(axes, panels):
        for name, h in histories.items():
            v = np.asarray(h.get(key, ()), dtype=float)
            if not v.size:
                continue
            k = max(1, v.size // 50)
            ax.plot(np.convolve(v, np.ones(k) / k, mode="valid"), label=name, lw=1)
        ax.set(title=title, xlabel="step")
    axes[1].set_ylim(0, 1)
    axes[3].set_yscale("log")
    axes[1].legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png")
    return path
