"""ROC plots (matplotlib, Agg backend, PNG written atomically)."""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

from ..fileio import atomic_path


def plot_roc(curves: Dict[str, Tuple[np.ndarray, np.ndarray]], path: str, title: str = "ROC",
             fars: Sequence[float] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)) -> str:
    """Plot TAR against log FAR for each named ``(fpr, tpr)`` curve into ``path`` (PNG).

    Returns:
        ``path``.
    """
    import matplotlib  # optional: heavy

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # optional: heavy

    fig = Figure(figsize=(6, 4.5), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    lo = min(fars)
    for name, (fpr, tpr) in curves.items():
        fpr, tpr = np.asarray(fpr), np.asarray(tpr)
        keep = fpr > 0
        ax.plot(fpr[keep], tpr[keep], lw=1.2, label=name)
        lo = min(lo, float(fpr[keep].min()) if keep.any() else lo)
    ax.set_xscale("log")
    ax.set_xlim(max(lo, 1e-7), 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("False accept rate")
    ax.set_ylabel("True accept rate")
    ax.set_title(title)
    ax.grid(True, which="both", linestyle="--", linewidth=0.5)
    ax.legend(loc="lower right")
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return path
