"""``lh2face bench --lr-sweep``: every head at every swept peak learning rate (first training seed),
the best on a validation set of its own seed (disjoint from the evaluation set)."""
from __future__ import annotations

import json
import math
import os
from typing import Any, Callable, Dict, List, Sequence

from ..fileio import write_json
from .bootstrap import bootstrap_metrics, percentile_ci
from .pipeline import TrainData, prepare_evalset, score_runs, train_run
from .report import fmt
from .specs import HeadSpec

__all__ = ["lr_sweep", "lr_tag", "sweep_dir"]


def lr_tag(lr: float) -> str:
    return f"lr{lr:g}"


def sweep_dir(out: str, spec: HeadSpec, lr: float) -> str:
    """The folder of ``spec``'s sweep run at ``lr``."""
    return os.path.join(out, "lr_sweep", spec.folder, lr_tag(lr))


def _diverged_before(marker: str, key: str):
    try:
        with open(marker) as fh:
            old = json.load(fh)
        return old.get("error", "diverged") if old.get("key") == key else None
    except (OSError, ValueError, AttributeError):
        return None


def lr_sweep(cfg, specs: Sequence[HeadSpec], data: TrainData, progress: bool,
             echo: Callable[[str], None]) -> Dict[str, Any]:
    """Train and score every head at every rate of ``cfg.lr_sweep``; returns the sweep's summary
    (``heads``: label -> ``chosen`` rate and a row per rate)."""
    from ..training import spec_key  # lazy: torch (the bench package imports without it)

    out = os.path.abspath(cfg.out)
    echo(f"[lr sweep] validation set: {cfg.val_families} families (seed {cfg.val_seed}); "
         f"{len(specs)} heads x {len(cfg.lr_sweep)} learning rates, training seed {cfg.seeds[0]}")
    val = prepare_evalset(os.path.join(out, "valset"), cfg.val_families, cfg.val_seed, progress)
    table: Dict[str, Dict[str, Any]] = {}
    for spec in specs:
        runs: List[Any] = []
        diverged: Dict[float, str] = {}
        for lr in cfg.lr_sweep:
            d = sweep_dir(out, spec, lr)
            marker = os.path.join(d, "diverged.json")
            key = spec_key(cfg.train_config(lr, cfg.seeds[0]), spec, data.key)
            earlier = _diverged_before(marker, key)
            if earlier is not None:
                diverged[float(lr)] = earlier
                echo(f"      {spec.label} at lr={lr:g}: diverged in an earlier run (kept)")
                continue
            try:  # a comparison run of the same settings (same lr, first seed) is reused
                runs.append(train_run(spec, cfg.seeds[0], lr, cfg.train_config, data, d, progress=progress, echo=echo,
                                      name=f"{spec.label} {lr_tag(lr)}",
                                      reuse_from=[os.path.join(out, spec.folder, f"seed{cfg.seeds[0]}")]))
            except FloatingPointError as exc:
                diverged[float(lr)] = str(exc)
                write_json(marker, {"key": key, "error": str(exc)})
                echo(f"      {spec.label} at lr={lr:g}: diverged ({exc})")
        sets = score_runs(runs, val, device=cfg.device, progress=progress)
        point, reps = bootstrap_metrics(sets, val.ev.num_families, min(cfg.bootstrap, 500), cfg.bootstrap_seed,
                                        progress, desc=f"bootstrap {spec.label}")
        rows = {}
        for r, p, rp in zip(runs, point, reps):
            rows[r.lr] = {"value": p[cfg.sweep_metric], "ci": percentile_ci(rp[cfg.sweep_metric]),
                          "clip": r.clip_fraction, "dir": os.path.relpath(r.dir, out)}
        for lr, msg in diverged.items():
            rows[lr] = {"value": math.nan, "ci": [math.nan, math.nan], "diverged": msg}
        finite = {lr: v["value"] for lr, v in rows.items() if math.isfinite(v["value"])}
        if not finite:
            raise FloatingPointError(f"{spec.label}: every learning rate of the sweep diverged")
        best = max(finite, key=lambda lr: (finite[lr], -abs(math.log(lr / cfg.lr))))
        table[spec.label] = {"chosen": best, "rows": {f"{lr:g}": rows[lr] for lr in sorted(rows)}}
        vals = "  ".join(f"{lr:g}: {fmt(cfg.sweep_metric, rows[lr]['value'])}" for lr in sorted(rows))
        echo(f"      {spec.label:<20} {vals}   -> lr {best:g}")
    return {"metric": cfg.sweep_metric, "learning_rates": [float(x) for x in cfg.lr_sweep],
            "seed": int(cfg.seeds[0]), "val_families": cfg.val_families, "val_seed": cfg.val_seed,
            "val_sha256": val.sha256, "heads": table}
