"""The printed report of ``lh2face bench`` and ``lh2face quickstart`` (one renderer): per-head table, the
quickstart's verify.bin and IJB-SYNTH numbers where the runs have them, achieved interval widths, the positive
control, the minimal detectable effect and the differences to the reference."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

from ..eval.report import table
from .bootstrap import contains
from .records import Comparison

__all__ = ["format_report", "fmt", "is_rate", "TABLE_METRICS", "EVALUATION_COLUMNS"]

TABLE_METRICS: Tuple[Tuple[str, str], ...] = (
    ("hard_hq_tar@1e-1", "hardHQ@1e-1"),
    ("hard_hq_tar@1e-2", "hardHQ@1e-2"),
    ("hard_hq_auc", "hardHQ AUC"),
    ("yawed_tar@1e-2", "yawed@1e-2"),
    ("all_hq_tar@1e-3", "allHQ@1e-3"),
    ("overall_tar@1e-3", "overall@1e-3"),
    ("rho_norm_quality", "rho(|z|,q)"),
)

EVALUATION_COLUMNS: Tuple[Tuple[str, str, float, int], ...] = (
    ("verify_accuracy", "verify.bin accuracy", 100.0, 2),
    ("ijb_tar@1e-3", "IJB TAR@1e-3", 100.0, 2),
    ("ijb_tar@1e-2", "IJB TAR@1e-2", 100.0, 2),
    ("ijb_tar@1e-1", "IJB TAR@1e-1", 100.0, 2),
    ("ijb_auc", "IJB AUC", 1.0, 4),
)
"""``(evaluation, header, scale, decimals)``: the columns of a head's ``evaluations`` the report prints."""


def is_rate(metric: str) -> bool:
    """TARs and AUCs are rates (printed in percent); correlations are not."""
    return not metric.startswith("rho")


def fmt(metric: str, value: Optional[float], signed: bool = False) -> str:
    """A rate in percent (1 decimal), a correlation with 3 decimals."""
    if value is None or not math.isfinite(value):
        return "nan"
    if is_rate(metric):
        return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _evalset_line(ctx) -> str:
    from ..data.synthetic import HIGH_QUALITY  # lazy: torch (the bench package imports without it)

    ev, pairs = ctx.ev, ctx.counts
    return (f"evaluation set: {ev.config.families} families x 3 look-alikes (seed {ev.config.seed}), "
            f"{len(ev)} images, {int(ev.hq.sum())} HQ (quality >= {HIGH_QUALITY}); hard-HQ pairs: "
            f"{pairs['hard_hq']['genuine']} genuine / {pairs['hard_hq']['impostor']} look-alike impostors")


def _control_lines(c: Comparison) -> List[str]:
    if c.control is None or c.control == c.reference:
        return []
    lines = ["", f"positive control: {c.control} ({c.heads[c.control].spec}), a head with a known handicap, "
                 f"vs {c.reference}:"]
    for m in ("hard_hq_tar@1e-2", "hard_hq_tar@1e-1"):
        d = c.differences[c.control][m]
        lo, hi = d.ci
        seen = "detected" if d.verdict == "loss" else "NOT detected (the bench could not tell it at this scale)"
        lines.append(f"  {m}: {fmt(m, d.diff, True)} points, 95% CI [{fmt(m, lo, True)}, {fmt(m, hi, True)}], "
                     f"seed spread {fmt(m, d.seed_spread)}: {d.verdict}; handicap {seen}")
    return lines


def _mde_lines(c: Comparison) -> List[str]:
    lines = []
    for m, s in c.mde.items():
        if not s.comparisons:
            lines.append(f"minimal detectable effect, {m}: unknown (needs >= 2 training seeds per head)")
            continue
        lines.append(f"minimal detectable effect, {m}: a win needed > {fmt(m, s.value)} points "
                     f"(median over {s.comparisons} comparisons of max(diff - CI low, seed spread); "
                     f"CI lower half-width {fmt(m, s.ci_lower_half)}, seed spread {fmt(m, s.seed_spread)})")
    return lines


def _outside_lines(c: Comparison) -> List[str]:
    """A note per difference whose percentile interval does not contain its estimate."""
    lines = []
    for lab, per in c.differences.items():
        for m, d in per.items():
            if not contains(d.ci, d.diff):
                lo, hi = d.ci
                lines.append(f"note: {lab} {m}: the 95% percentile interval [{fmt(m, lo, True)}, {fmt(m, hi, True)}] "
                             f"does not contain the estimate {fmt(m, d.diff, True)} (a discrete statistic; the "
                             "forest plot draws the interval's bounds and the estimate apart)")
    return lines


def _evaluation_lines(c: Comparison) -> List[str]:
    """The table of the heads' :data:`EVALUATION_COLUMNS` (none when no run has them)."""
    if not any(h.evaluations for h in c.heads.values()):
        return []
    rows = []
    for lab, h in c.heads.items():
        cells = [lab]
        for name, _, scale, decimals in EVALUATION_COLUMNS:
            v = h.evaluations.get(name, math.nan)
            cells.append(f"{scale * v:.{decimals}f}" if math.isfinite(v) else "n/a")
        rows.append(cells)
    return ["", "the training data's verify.bin (10-fold accuracy) and IJB-SYNTH 1:1 (TAR@FAR over all pairs) in %, "
                "AUC as a fraction; per head: mean over training seeds",
            table(["head"] + [header for _, header, _, _ in EVALUATION_COLUMNS], rows)]


def format_report(c: Comparison, ctx, lr_sweep: Optional[Dict[str, Any]] = None) -> List[str]:
    """The printed tables: per head (seed-mean [95% CI]), the heads' evaluations (:data:`EVALUATION_COLUMNS`)
    where the runs have them, then differences to the reference.

    Args:
        ctx: the :class:`~lh2face_plugin.bench.pipeline.EvalContext` the comparison was scored on.
    Returns:
        the lines to print.
    """
    lines = [_evalset_line(ctx), "TAR, AUC in %; per head: mean over training seeds [95% CI, bootstrap over families]"]
    header = ["head", "seeds", "lr"] + [short for _, short in TABLE_METRICS] + ["clip%", "train acc%"]
    rows = []
    for lab, h in c.heads.items():
        tag = " (ref)" if lab == c.reference else " (control)" if lab == c.control else ""
        cells = [lab + tag, str(len(h.seeds)), f"{h.lr:g}"]
        for m, _ in TABLE_METRICS:
            s = h.metrics[m]
            lo, hi = s.ci
            signed = not is_rate(m)
            cells.append(f"{fmt(m, s.mean, signed)} [{fmt(m, lo, signed)},{fmt(m, hi, signed)}]")
        cells += [f"{100 * h.clip_fraction:.0f}", f"{100 * h.train_accuracy:.1f}"]
        rows.append(cells)
    lines.append(table(header, rows))
    lines += _evaluation_lines(c)
    if all(len(h.seeds) == 1 for h in c.heads.values()):
        lines.append("one training seed per head: the intervals leave out seed-to-seed variation "
                     "(lh2face bench with two or more --seeds measures it)")
    lines.append("")
    for m in ("hard_hq_tar@1e-1", "hard_hq_tar@1e-2"):
        half = c.ci_half_width[m]
        lines.append(f"achieved 95% CI half-width, {m}: one run +-{100 * half['single_run_median']:.1f} points, "
                     f"a head (seed mean) +-{100 * half['head_median']:.1f}, a paired difference "
                     f"+-{100 * half['difference_median']:.1f} (medians)")
    lines += _mde_lines(c)
    lines += _control_lines(c)
    if c.differences:
        lines += ["", f"differences vs {c.reference} (paired bootstrap over families, seeds averaged per replicate; "
                      "win = CI excludes 0 and |diff| > seed spread)"]
        header = ["head", "metric", "diff", "95% CI", "seed spread", "verdict"]
        rows = []
        for lab, per in c.differences.items():
            for m, _ in TABLE_METRICS + (("yawed_tar@1e-1", ""),):
                d = per[m]
                lo, hi = d.ci
                sp = d.seed_spread
                rows.append([lab, m, fmt(m, d.diff, True), f"[{fmt(m, lo, True)}, {fmt(m, hi, True)}]",
                             fmt(m, sp) if sp is not None and math.isfinite(sp) else "n/a", d.verdict])
        lines.append(table(header, rows))
        lines += _outside_lines(c)
    if lr_sweep:
        lines += ["", f"learning rate per head (sweep on the validation set, {lr_sweep['metric']}, seed "
                      f"{lr_sweep['seed']}): " + ", ".join(f"{lab} {v['chosen']:g}"
                                                          for lab, v in lr_sweep["heads"].items())]
    return lines
