"""Result tables for the terminal and JSON files of the numbers."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from ..fileio import update_json

_ARRAYS = ("features", "scores", "labels", "template_features", "unique_templates", "roc", "run")


def jsonable(result: Mapping) -> Dict:
    """The numbers of a result dict, without arrays (features, scores, ROC points)."""
    def conv(v):
        if isinstance(v, Mapping):
            return {str(k): conv(x) for k, x in v.items()}
        if isinstance(v, (np.floating, np.integer)):
            return v.item()
        if isinstance(v, float) and not np.isfinite(v):
            return None
        return v
    return {k: conv(v) for k, v in result.items() if k not in _ARRAYS}


def _conflict(path: str, name: str, old: Any, run: Optional[Mapping]) -> Optional[str]:
    """Why the entry ``old`` of ``path`` must not be replaced by a run ``run`` (``None``: it may)."""
    if not isinstance(old, Mapping):
        return f"{path}: entry {name!r} is not an evaluation result"
    old_run = old.get("run")
    if run is not None and isinstance(old_run, Mapping) and all(old_run.get(k) == run.get(k)
                                                                 for k in ("command", "key", "data")):
        return None
    who = (f"'lh2face {old_run.get('command')}' of {old_run.get('model')}" if isinstance(old_run, Mapping)
           else "an earlier run")
    return (f"{path} already holds results for {name!r} from {who}; choose another --out (or remove that entry) "
            "rather than overwrite another run's numbers")


def check_results(path: str, results: Mapping[str, Optional[Mapping]]) -> None:
    """Raise ``FileExistsError`` if writing ``{name: run}`` to ``path`` would replace another run's numbers.

    ``results`` maps each entry name to its run description (``{"command", "model", "key",
    "data"}``); an entry of the same run (same command, model and settings key, data) may be replaced.
    """
    if not os.path.exists(path):
        return
    _check_document(path, _read(path), {n: run for n, run in results.items()})


def _read(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable results file ({type(exc).__name__}: {exc}); move it away or "
                         "choose another --out") from None


def _check_document(path: str, doc: Any, runs: Mapping[str, Optional[Mapping]]) -> None:
    if not isinstance(doc, dict):
        raise FileExistsError(f"{path}: not a results file of 'lh2face eval'; choose another --out")
    for name, run in runs.items():
        if name in doc:
            why = _conflict(path, name, doc[name], run)
            if why:
                raise FileExistsError(why)


def write_results(path: str, results: Mapping, run: Optional[Mapping] = None) -> str:
    """Merge ``{name: jsonable(result)}`` into the results file ``path`` (atomic, locked).

    Entries of other names are kept, so several commands may share one ``--out``; an entry of the
    same name is replaced only by the same run (``run``: ``{"command", "model", "key", "data"}``,
    stored with each entry), otherwise ``FileExistsError`` is raised and nothing is written.
    """
    def merge(doc: Any) -> Dict:
        doc = {} if doc is None else doc
        _check_document(path, doc, {name: run for name in results})
        for name, r in results.items():
            entry = jsonable(r)
            if run is not None:
                entry["run"] = dict(run)
            doc[name] = entry
        return doc

    update_json(path, merge)
    return path


def table(header: List[str], rows: List[List[str]]) -> str:
    """Plain fixed-width table."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = "  ".join("{:<%d}" % w for w in widths)
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line.format(*header), sep] + [line.format(*map(str, r)) for r in rows])


def _tar_cell(result: Mapping, far: float) -> str:
    """``TAR (measured FAR)`` in percent, or ``n/a`` where the impostors cannot resolve the FAR."""
    tar = result["tar_at_far"].get(far, float("nan"))
    if tar is None or not np.isfinite(tar):
        return "n/a"
    measured = result.get("far_measured", {}).get(far)
    return f"{100 * tar:.2f}" + (f" ({measured:.1e})" if measured is not None and np.isfinite(measured) else "")


def _unresolved(results: Mapping[str, Mapping]) -> List[str]:
    return [f"  {name}: TAR@FAR={far:g} n/a, {why}" for name, r in results.items()
            for far, why in r.get("tar_at_far_unresolved", {}).items()] + \
        [f"  {name}: {r['duplicate_pairs']} repeated pair(s) evaluated once" for name, r in results.items()
         if r.get("duplicate_pairs")]


def _compat(results: Mapping[str, Mapping], fars: List[float]) -> str:
    rows = [[name] + [f"{100 * r['arcface_torch']['tar_at_far'][f]:.2f}" for f in fars]
            for name, r in results.items() if "arcface_torch" in r]
    if not rows:
        return ""
    convention = next(iter(results.values()))["arcface_torch"]["convention"]
    return (f"\n\nTAR (%) as arcface_torch reports it, for comparison ({convention})\n"
            + table(["set"] + [f"TAR@FAR={f:g}" for f in fars], rows))


def verification_table(results: Mapping[str, Mapping]) -> str:
    """Accuracy, XNorm and TAR (measured FAR) per set; unresolvable TARs as ``n/a`` with the reason;
    then arcface_torch's ``calculate_val`` numbers, labelled."""
    fars = sorted({f for r in results.values() for f in r["tar_at_far"]})
    header = ["set", "pairs", "accuracy", "+-", "XNorm"] + [f"TAR@FAR={f:g} (FAR)" for f in fars]
    rows = [[name, r["pairs"], f"{100 * r['accuracy']:.2f}", f"{100 * r['accuracy_std']:.2f}", f"{r['xnorm']:.4f}"]
            + [_tar_cell(r, f) for f in fars] for name, r in results.items()]
    notes = _unresolved(results)
    return table(header, rows) + ("\n" + "\n".join(notes) if notes else "") + _compat(results, fars)


def ijb_table(result: Mapping) -> str:
    """1:1 TAR (measured FAR) and AUC; unresolvable TARs as ``n/a`` with the reason; the table of
    arcface_torch's ``eval_ijbc.py`` (nearest ROC point), labelled; 1:N when present."""
    fars = list(result["tar_at_far"])
    header = ["target", "images", "templates", "pairs"] + [f"{f:g}" for f in fars] + ["AUC"]
    row = [result["target"], result.get("images", "-"), result.get("templates", "-"), result["pairs"]] + \
          [_tar_cell(result, f) for f in fars] + [f"{100 * result['auc']:.2f}"]
    text = "TAR (%) at FAR (measured FAR)\n" + table(header, [row])
    notes = _unresolved({result["target"]: result})
    if result.get("duplicate_pairs"):
        notes.append(f"  {result['target']}: {result['duplicate_pairs']} repeated template pair(s) evaluated once")
    text += ("\n" + "\n".join(notes) if notes else "") + _compat({result["target"]: result}, fars)
    ident = result.get("identification")
    if ident:
        any_run = next(iter(ident.values()))
        ranks, fpirs = list(any_run["rank"]), list(any_run["tpir"])
        header = ["gallery"] + [f"rank-{k}" for k in ranks] + [f"TPIR@FPIR={f:g}" for f in fpirs]
        rows = [[g] + [f"{100 * r['rank'][k]:.2f}" for k in ranks] + [f"{100 * r['tpir'][f]:.2f}" for f in fpirs]
                for g, r in ident.items()]
        text += "\n\n1:N identification (%)\n" + table(header, rows)
    return text


def out_file(out_dir: str, name: str) -> str:
    os.makedirs(out_dir, exist_ok=True)
    return os.path.join(out_dir, name)
