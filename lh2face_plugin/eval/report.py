"""Result tables for the terminal and JSON files of the numbers."""
from __future__ import annotations

import os
from typing import Dict, List, Mapping

import numpy as np

from ..fileio import write_json

_ARRAYS = ("features", "scores", "labels", "template_features", "unique_templates", "roc")


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


def write_results(path: str, results: Mapping) -> str:
    """Write ``{name: jsonable(result)}`` to ``path`` atomically."""
    write_json(path, {name: jsonable(r) for name, r in results.items()})
    return path


def table(header: List[str], rows: List[List[str]]) -> str:
    """Plain fixed-width table."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = "  ".join("{:<%d}" % w for w in widths)
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line.format(*header), sep] + [line.format(*map(str, r)) for r in rows])


def verification_table(results: Mapping[str, Mapping]) -> str:
    fars = sorted({f for r in results.values() for f in r["tar_at_far"]})
    header = ["set", "pairs", "accuracy", "+-", "XNorm"] + [f"TAR@FAR={f:g}" for f in fars]
    rows = [[name, r["pairs"], f"{100 * r['accuracy']:.2f}", f"{100 * r['accuracy_std']:.2f}", f"{r['xnorm']:.4f}"]
            + [f"{100 * r['tar_at_far'][f]:.2f}" for f in fars] for name, r in results.items()]
    return table(header, rows)


def ijb_table(result: Mapping) -> str:
    fars = list(result["tar_at_far"])
    header = ["target", "images", "templates", "pairs"] + [f"{f:g}" for f in fars] + ["AUC"]
    row = [result["target"], result["images"], result["templates"], result["pairs"]] + \
          [f"{100 * result['tar_at_far'][f]:.2f}" for f in fars] + [f"{100 * result['auc']:.2f}"]
    text = "TAR (%) at FAR\n" + table(header, [row])
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
