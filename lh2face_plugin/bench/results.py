"""``OUT/results.json`` of ``lh2face bench`` and ``lh2face quickstart``: one schema, the comparison as JSON
(NaN as null), read back by the next run into the folder and by ``lh2face bench --report``."""
from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..fileio import open_regular, write_json
from .records import Comparison, RunResult
from .scores import METRICS

__all__ = ["RESULTS_FORMAT", "RESULTS_VERSION", "RESULTS_VERSIONS", "EXTRA_BLOCKS", "EXTRA_PLOTS", "to_json",
           "check_out", "read_results", "write_results", "evalset_block", "summary_dict"]

RESULTS_FORMAT = "lh2face-bench"
RESULTS_VERSION = 3
"""1: the first bench; 2: runs gathered from ``runs.json`` (keys, comparability digest), control and minimal
detectable effect; 3: written by the quickstart too: every run's and head's ``evaluations`` (the quickstart's
verify.bin and IJB-SYNTH numbers, empty for a bench run) and an optional ``export`` block."""

RESULTS_VERSIONS: Tuple[int, ...] = (1, 2, 3)
"""The versions this package reads (``--report`` needs 2 or later: the stored run keys)."""

EXTRA_BLOCKS: Tuple[str, ...] = ("export",)
"""Top-level blocks a preset adds (the quickstart's ONNX export and pack), kept when ``--report`` rebuilds."""

EXTRA_PLOTS: Tuple[str, ...] = ("roc_ijb_synth",)
"""Plots a preset draws that ``--report`` cannot redraw (the quickstart's IJB-SYNTH ROC): kept while their files are."""


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


def _earlier_quickstart(doc: Any) -> bool:
    """A ``results.json`` of the quickstart before it wrote this schema (no ``format``)."""
    return isinstance(doc, dict) and "format" not in doc and {"hard_hq_set", "heads", "export"} <= set(doc)


def _load(out: str) -> Tuple[str, Optional[Dict[str, Any]]]:
    """``(kind, doc)`` of ``out/results.json``: kind ``absent``, ``ours``, ``earlier-quickstart`` or ``foreign``."""
    try:
        with open_regular(_path(out), "results.json", text=True) as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        return "absent", None
    except (OSError, ValueError):
        return "foreign", None
    if _earlier_quickstart(doc):
        return "earlier-quickstart", None
    if not isinstance(doc, dict) or doc.get("format") != RESULTS_FORMAT:
        return "foreign", None
    version = doc.get("version")
    if isinstance(version, bool) or version not in RESULTS_VERSIONS:
        raise ValueError(f"{_path(out)}: key 'version' must be one of {', '.join(map(str, RESULTS_VERSIONS))} "
                         f"(the results.json versions this lh2face reads), got {str(version)[:40]!r}")
    return "ours", doc


def read_results(out: str) -> Optional[Dict[str, Any]]:
    """The earlier ``results.json`` of ``out`` (:data:`RESULTS_VERSIONS`), or ``None``: absent, unreadable,
    another tool's, or the quickstart's of before version 3 (nothing in it is reused).

    Raises:
        ValueError: ``format`` is this schema's but ``version`` one this package does not know (one line naming
            the file and the key).
    """
    return _load(out)[1]


def check_out(out: str) -> None:
    """Refuse a folder whose ``results.json`` another tool wrote."""
    if _load(out)[0] == "foreign":
        raise FileExistsError(f"{_path(out)} was not written by lh2face bench or lh2face quickstart; "
                              "choose another --out")


def write_results(out: str, summary: Mapping[str, Any]) -> str:
    write_json(_path(out), to_json(dict(summary)))
    return _path(out)


def evalset_block(ctx, out: str) -> Dict[str, Any]:
    """What ``results.json`` says of the evaluation set (``ctx``: :class:`~lh2face_plugin.bench.pipeline.EvalContext`)."""
    from ..data.synthetic import HIGH_QUALITY  # lazy: torch (the bench package imports without it)

    ev = ctx.ev
    return {"path": os.path.relpath(ev.path, out), "sha256": ev.sha256, "config": ev.config.as_dict(),
            "images": len(ev), "hq_images": int(ev.hq.sum()), "pairs": ctx.counts, "quality_threshold": HIGH_QUALITY}


def summary_dict(out: str, comparison: Comparison, results: Sequence[RunResult], *, evalset: Dict[str, Any],
                 train_data: Dict[str, Any], comparable: str, config: Optional[Dict[str, Any]],
                 command: Optional[str], lr_sweep: Optional[Dict[str, Any]], plots: Dict[str, str],
                 notes: List[str], reused: Mapping[str, bool], wall_seconds: float,
                 extra: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The document of ``results.json`` (``extra``: the :data:`EXTRA_BLOCKS` a preset adds)."""
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
        "wall_seconds": wall_seconds, **{k: v for k, v in (extra or {}).items() if k in EXTRA_BLOCKS},
    }
