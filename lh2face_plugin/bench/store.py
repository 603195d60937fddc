"""Results that accumulate: every run's result stored under its key in ``OUT/runs.json``, and the
runs of one table gathered from it.

A bench run adds (or refreshes) the records of the runs it trained or reused; records are never
dropped. The table gathers every stored run that is *comparable* with the current one (same
training settings but seed and learning rate, same training data, same evaluation set:
:meth:`~lh2face_plugin.bench.records.RunResult.comparable`) and whose folder still holds its
model (a run folder retrained with other settings keeps only its newest model), so a rerun with
another head list adds rows and keeps the others.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..fileio import open_regular, resolve_inside, update_json
from .records import RunResult
from .results import to_json

__all__ = ["RUNS_FILE", "record_results", "stored_results", "stored_table", "gather"]

RUNS_FILE = "runs.json"
FORMAT = "lh2face-bench-runs"


def _path(out: str) -> str:
    return os.path.join(out, RUNS_FILE)


def record_results(out: str, results: Sequence[RunResult], table: Optional[Mapping[str, Any]] = None) -> None:
    """Store ``results`` under their keys (replacing records of the same key), atomically and locked.

    ``table``: what ``bench --report`` needs to rebuild the table from this file alone (the
    comparability digest, evaluation set path, reference, control, bootstrap settings, head order),
    kept under ``"table"``."""
    def update(doc):
        if doc is None:
            doc = {"format": FORMAT, "version": 1, "runs": {}}
        elif not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"{_path(out)} is not lh2face bench's run store; choose another --out")
        for r in results:
            doc["runs"][r.key] = to_json(r.to_dict())
        if table is not None:
            doc["table"] = to_json(dict(table))
        return doc

    update_json(_path(out), update)


def stored_results(out: str) -> List[RunResult]:
    """Every stored result, in the order first stored (none when ``OUT/runs.json`` does not exist)."""
    try:
        with open_regular(_path(out), "the run store", text=True) as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise ValueError(f"{_path(out)}: unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{_path(out)} is not lh2face bench's run store; choose another --out")
    runs = doc.get("runs")
    if not isinstance(runs, dict):
        raise ValueError(f"{_path(out)}: key 'runs' must be an object of run records, not {type(runs).__name__}")
    results = []
    for key, d in runs.items():
        where = f"{_path(out)}: runs[{str(key)[:40]!r}]"
        try:
            r = RunResult.from_dict(d)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        for name in ("dir", "model"):  # a record names files of OUT only
            resolve_inside(out, getattr(r, name), source=f"{where} key {name!r}")
        if os.path.dirname(os.path.normpath(r.model)) != os.path.normpath(r.dir):
            raise ValueError(f"{where}: key 'model' ({r.model[:80]!r}) is not a file of its run folder 'dir'")
        results.append(r)
    return results


def stored_table(out: str) -> Optional[Dict[str, Any]]:
    """The ``"table"`` block of ``OUT/runs.json`` (see :func:`record_results`), or ``None``."""
    try:
        with open_regular(_path(out), "the run store", text=True) as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return None
    table = doc.get("table") if isinstance(doc, dict) and doc.get("format") == FORMAT else None
    return table if isinstance(table, dict) else None


def _holds(out: str, r: RunResult) -> bool:
    """The run's folder still holds the model this result was measured on."""
    from ..training import trained_info  # lazy: torch (the bench package imports without it)

    info = trained_info(os.path.join(out, r.model))
    return (info is not None and info.get("key") == r.run_key and info.get("model_sha256") == r.model_sha256
            and os.path.exists(os.path.join(out, r.model)))


def gather(out: str, comparable: str, order: Sequence[str] = (),
           network: Optional[str] = None) -> Tuple[List[RunResult], List[str]]:
    """The stored results of one table and notes on the stored ones left out.

    Args:
        comparable: :meth:`~lh2face_plugin.bench.records.RunResult.comparable` of the current runs.
        order: labels to put first, in this order; the others follow in the order first stored.
        network: the table's backbone, which runs whose spec names their own (``#NETWORK``) stand in for.

    Returns:
        results grouped by label (``order`` first), by seed within a label; notes.
    """
    kept: Dict[str, List[RunResult]] = {}
    other, replaced = 0, []
    for r in stored_results(out):
        if r.comparable(network) != comparable:
            other += 1
        elif not _holds(out, r):
            replaced.append(f"{r.label} seed{r.seed}")
        else:
            kept.setdefault(r.label, []).append(r)
    notes = []
    if other:
        notes.append(f"{other} stored run result(s) of other settings, data or evaluation set left out of this table")
    if replaced:
        notes.append(f"left out (model since retrained or removed): {', '.join(replaced)}")
    labels = [lab for lab in order if lab in kept] + [lab for lab in kept if lab not in order]
    results: List[RunResult] = []
    for lab in labels:
        by_seed: Dict[int, RunResult] = {}
        for r in kept[lab]:
            by_seed[r.seed] = r
        results += [by_seed[s] for s in sorted(by_seed)]
    return results, notes

