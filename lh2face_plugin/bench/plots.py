"""The bench's PNG plots: hard-HQ ROC of every run, training curves, differences (forest), lr sweep."""
from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, Optional, Sequence

from ..eval.plots import plot_roc
from ..fileio import atomic_path
from .records import Comparison, RunResult
from .report import is_rate

__all__ = ["plot_comparison", "error_bar", "FOREST_METRICS"]

FOREST_METRICS = ("hard_hq_tar@1e-1", "hard_hq_tar@1e-2", "all_hq_tar@1e-3", "overall_tar@1e-3", "rho_norm_quality")


def error_bar(lo: float, hi: float) -> tuple:
    """``(centre, half)`` of an error bar drawn from the interval's bounds ``[lo, hi]`` alone.

    The bar spans exactly the interval; the point estimate is drawn as its own marker. A percentile
    interval need not contain its estimate (with discrete TARs a difference often sits on, or
    beyond, an edge), so the bar is never measured from the estimate: its half-width is
    ``max(0, (hi - lo) / 2)``, never negative (the report says which intervals miss their estimate).
    Unknown bounds give ``(nan, 0)``: no bar.
    """
    lo, hi = (float(v) if v is not None else math.nan for v in (lo, hi))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return math.nan, 0.0
    return (lo + hi) / 2.0, max(0.0, (hi - lo) / 2.0)


def _save(fig, path: str) -> str:
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png")
    return path


def _history(out: str, r: RunResult) -> Dict[str, Any]:
    try:
        with open(os.path.join(out, r.dir, "train.json")) as fh:
            return json.load(fh).get("history", {})
    except (OSError, ValueError):
        return {}


def _forest(c: Comparison, path: str) -> str:
    from matplotlib.figure import Figure  # optional: heavy

    labels = list(c.differences)
    fig = Figure(figsize=(3.2 * len(FOREST_METRICS), 0.5 * len(labels) + 1.8), dpi=100)
    for k, m in enumerate(FOREST_METRICS):
        ax = fig.add_subplot(1, len(FOREST_METRICS), k + 1)
        scale = 100.0 if is_rate(m) else 1.0
        for y, lab in enumerate(labels):
            d = c.differences[lab][m]
            lo, hi = (v * scale if v is not None and math.isfinite(v) else math.nan for v in d.ci)
            sp = d.seed_spread
            if sp is not None and math.isfinite(sp):
                ax.fill_betweenx([y - 0.3, y + 0.3], -sp * scale, sp * scale, color="0.85", lw=0)
            colour = {"win": "tab:green", "loss": "tab:red"}.get(d.verdict, "tab:blue")
            centre, half = error_bar(lo, hi)
            if math.isfinite(centre):
                ax.errorbar([centre], [y], xerr=[half], fmt="none", ecolor=colour, capsize=3)
            ax.plot([d.diff * scale], [y], "o", color=colour)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels if k == 0 else [""] * len(labels))
        ax.set_ylim(-0.7, len(labels) - 0.3)
        ax.set_title(m + (" (points)" if is_rate(m) else ""), fontsize=9)
    fig.suptitle(f"difference vs {c.reference}: 95% CI (bars), seed spread (grey)", fontsize=10)
    return _save(fig, path)


def _sweep(sweep: Dict[str, Any], path: str) -> str:
    from matplotlib.figure import Figure  # optional: heavy

    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for lab, v in sweep["heads"].items():
        xs = [float(x) for x in v["rows"]]
        ys = [100 * (row["value"] if row["value"] is not None else math.nan) for row in v["rows"].values()]
        ax.plot(xs, ys, "o-", label=lab)
    ax.set(xscale="log", xlabel="peak learning rate", ylabel=f"{sweep['metric']} (%, validation set)",
           title="learning-rate sweep")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_comparison(out: str, results: Sequence[RunResult], scores: Sequence[Any], c: Comparison,
                    sweep: Optional[Dict[str, Any]] = None) -> Dict[str, str]:
    """Write ``roc_hard_hq.png``, ``training.png``, ``forest.png`` (with a reference and another head)
    and ``lr_sweep.png`` (with a sweep) into ``out``; returns ``{name: path}``."""
    import matplotlib  # optional: heavy

    matplotlib.use("Agg", force=False)
    from ..training import plot_training  # lazy: torch (the bench package imports without it)

    names = [f"{r.label} seed{r.seed}" for r in results]
    plots = {"roc_hard_hq": plot_roc({n: s.roc("hard_hq") for n, s in zip(names, scores)},
                                     os.path.join(out, "roc_hard_hq.png"),
                                     title="hard high-quality pairs (look-alike impostors)", fars=(1e-3, 1e-2, 1e-1)),
             "training": plot_training({n: _history(out, r) for n, r in zip(names, results)},
                                       os.path.join(out, "training.png"))}
    if c.differences:
        plots["forest"] = _forest(c, os.path.join(out, "forest.png"))
    if sweep:
        plots["lr_sweep"] = _sweep(sweep, os.path.join(out, "lr_sweep.png"))
    return plots
