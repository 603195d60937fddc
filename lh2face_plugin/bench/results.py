"""``OUT/results.json`` of ``lh2face bench``: the comparison as JSON (NaN as null)."""
from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from .records import Comparison, RunResult

__all__ = ["RESULTS_FORMAT", "RESULTS_VERSION", "to_json", "check_out", "read_results", "write_results",
           "evalset_block", "summary_dict"]

RESULTS_FORMAT = "lh2face-bench"
RESULTS_VERSION = 2
"""2: runs gathered from ``runs.json`` (keys, comparability digest), control and minimal detectable effect."""


def to_json(obj: Any) -> Any:
    """``obj`` with numpy scalars as Python numbers, NaN/Inf as None, keys as strings, tuples as lists."""
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _path(out: str) -> str:
    return os.path.join(out, "results.json")


def read_results(out: str) -> Optional[Dict[str, Any]]:
    """The bench's earlier ``results.json`` in ``out``, or ``None`` (absent or not the bench's)."""
    from ..fileio import open_regular

    try:
        with open_regular(_path(out), "results.json", text=True) as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == RESULTS_FORMAT else None


def check_out(out: str) -> None:
    """Refuse a folder whose ``results.json`` another tool wrote."""
    if os.path.exists(_path(out)) and read_results(out) is None:
        raise FileExistsError(f"{_path(out)} was not written by lh2face bench; choose another --out")


def write_results(out: str, summary: Mapping[str, Any]) -> str:
    from ..fileio import write_json

    write_json(_path(out), to_json(dict(summary)))
    return _path(out)


def evalset_block(ctx, out: str) -> Dict[str, Any]:
    """What ``results.json`` says of the evaluation set (``ctx``: :class:`~lh2face_plugin.bench.pipeline.EvalContext`)."""
    from ..data.synthetic import HIGH_QUALITY

    ev = ctx.ev
    return {"path": os.path.relpath(ev.path, out), "sha256": ev.sha256, "config": ev.config.as_dict(),
            "images": len(ev), "hq_images": int(ev.hq.sum()), "pairs": ctx.counts, "quality_threshold": HIGH_QUALITY}


def summary_dict(out: str, comparison: Comparison, results: Sequence[RunResult], *, evalset: Dict[str, Any],
                 train_data: Dict[str, Any], comparable: str, config: Optional[Dict[str, Any]],
                 command: Optional[str], lr_sweep: Optional[Dict[str, Any]], plots: Dict[str, str],
                 notes: List[str], reused: Mapping[str, bool], wall_seconds: float) -> Dict[str, Any]:
    """The document of ``results.json``."""
    from .scores import METRICS

    first = results[0]
    return {
        "format": RESULTS_FORMAT, "version": RESULTS_VERSION, "command": command, "config": config,
        "steps": first.train.get("steps"), "train_data": train_data, "evalset": evalset, "comparable": comparable,
        "metrics": METRICS, "reference": comparison.reference, "control": comparison.control,
        "bootstrap": {"replicates": comparison.replicates, "seed": comparison.bootstrap_seed, "unit": "family",
                      "pooling": "per replicate, a head's value is the mean over its training seeds; differences "
                                 "head - reference are taken per replicate; 95% percentile intervals",
                      "win_rule": "win/loss only when the 95% interval excludes 0 and |difference| exceeds the "
                                  "seed spread (the larger of the two heads' per-seed ranges)",
                      "mde": "smallest difference the run could have called a win: max(diff - CI low, seed spread) "
                             "per comparison; median over the comparisons"},
        "ci_half_width": comparison.ci_half_width, "mde": {m: e.to_dict() for m, e in comparison.mde.items()},
        "heads": {lab: {k: v for k, v in h.to_dict().items() if k != "label"} for lab, h in comparison.heads.items()},
        "differences": {lab: {m: d.to_dict() for m, d in per.items()} for lab, per in comparison.differences.items()},
        "runs": [{**r.to_dict(), "reused": reused.get(r.key)} for r in results],
        "lr_sweep": lr_sweep, "plots": plots, "notes": list(notes),
        "reevaluate": f"lh2face eval verify FILE.bin --model {os.path.join(out, first.model)} "
                      f"--network {first.network}",
        "wall_seconds": wall_seconds,
    }
