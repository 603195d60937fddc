"""``lh2face bench``: train several heads with several training seeds, compare them on the
held-out look-alike set with paired bootstrap intervals (see :mod:`lh2face_plugin.bench`)."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .specs import DEFAULT_HEADS, HeadSpec, parse_head_specs

__all__ = ["BenchConfig", "run_bench", "evaluate_runs", "format_report", "to_json"]

RESULTS_FORMAT = "lh2face-bench"
TABLE_METRICS: Tuple[Tuple[str, str], ...] = (
    ("hard_hq_tar@1e-1", "hardHQ@1e-1"),
    ("hard_hq_tar@1e-2", "hardHQ@1e-2"),
    ("hard_hq_auc", "hardHQ AUC"),
    ("yawed_tar@1e-2", "yawed@1e-2"),
    ("all_hq_tar@1e-3", "allHQ@1e-3"),
    ("overall_tar@1e-3", "overall@1e-3"),
    ("rho_norm_quality", "rho(|z|,q)"),
)
FOREST_METRICS = ("hard_hq_tar@1e-1", "hard_hq_tar@1e-2", "all_hq_tar@1e-3", "overall_tar@1e-3", "rho_norm_quality")


def _is_rate(metric: str) -> bool:
    return not metric.startswith("rho")


def _fmt(metric: str, value: Optional[float], signed: bool = False) -> str:
    """A rate in percent (1 decimal), a correlation with 3 decimals."""
    if value is None or not math.isfinite(value):
        return "nan"
    if _is_rate(metric):
        return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


@dataclass
class BenchConfig:
    """Settings of :func:`run_bench` (the flags of ``lh2face bench``).

    Attributes:
        out: output folder.
        heads: head specs ``[LABEL=]NAME[:k=v,...]`` (:mod:`~lh2face_plugin.bench.specs`).
        reference: label (or spec) of the head every difference is taken against (default: the first).
        seeds: training seeds (the data's seeds are separate).
        budget: multiplies ``steps``.
        steps, batch_size, network, embedding_size, lr, clip: training (:class:`~lh2face_plugin.training.TrainConfig`).
        lr_sweep: peak learning rates to try for every head first (empty: ``lr`` for all).
        sweep_metric: the validation metric that picks the learning rate.
        identities, images_per_id, data_seed: the synthetic training set.
        families, eval_seed: the held-out evaluation set (families of 3 look-alikes).
        val_families, val_seed: the validation set of the learning-rate sweep.
        bootstrap, bootstrap_seed: replicates of the family bootstrap.
        device, workers: where to train, DataLoader workers.
    """

    out: str = "lh2face_runs/bench"
    heads: Sequence[str] = DEFAULT_HEADS
    reference: Optional[str] = None
    seeds: Sequence[int] = (0, 1)
    budget: float = 1.0
    steps: int = 500
    batch_size: int = 64
    network: str = "compact-tiny"
    embedding_size: int = 512
    lr: float = 0.1
    clip: Union[str, float] = "scaled"
    lr_sweep: Sequence[float] = ()
    sweep_metric: str = "hard_hq_tar@1e-1"
    identities: int = 200
    images_per_id: int = 20
    data_seed: int = 0
    families: int = 120
    eval_seed: int = 1
    val_families: int = 40
    val_seed: int = 2
    bootstrap: int = 1000
    bootstrap_seed: int = 0
    device: str = "cpu"
    workers: int = 1

    @property
    def total_steps(self) -> int:
        return max(1, int(round(self.steps * self.budget)))

    def train_config(self, lr: float, seed: int):
        from ..training import TrainConfig

        return TrainConfig(network=self.network, embedding_size=self.embedding_size, steps=self.total_steps,
                           batch_size=self.batch_size, lr=lr, clip=self.clip, seed=int(seed), device=self.device,
                           workers=self.workers)

    def validate(self) -> List[HeadSpec]:
        """Check every setting; returns the parsed head specs."""
        from .scores import METRICS

        if not (isinstance(self.budget, (int, float)) and math.isfinite(self.budget) and self.budget > 0):
            raise ValueError(f"budget must be a number > 0, got {self.budget!r}")
        for key in ("identities", "images_per_id", "families", "bootstrap"):
            v = getattr(self, key)
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"{key} must be a positive integer, got {v!r}")
        if self.identities < 2:
            raise ValueError(f"identities must be >= 2, got {self.identities}")
        if not self.seeds:
            raise ValueError("seeds must name at least one training seed")
        if len(set(int(s) for s in self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {list(self.seeds)}")
        seeds = {"data_seed": self.data_seed, "eval_seed": self.eval_seed}
        if self.lr_sweep:
            seeds["val_seed"] = self.val_seed
        if len(set(seeds.values())) != len(seeds):
            raise ValueError(f"the data, evaluation and validation seeds must differ (different identities), "
                             f"got {seeds}")
        for lr in self.lr_sweep:
            if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
                raise ValueError(f"lr_sweep values must be numbers > 0, got {lr!r}")
        if self.sweep_metric not in METRICS:
            raise ValueError(f"sweep_metric must be one of {', '.join(METRICS)}, got {self.sweep_metric!r}")
        self.train_config(self.lr, 0).validate()
        specs, _ = self.head_specs()
        self.reference_label(specs)
        return specs

    def head_specs(self) -> Tuple[List[HeadSpec], List[str]]:
        """Parsed head specs, and notes on default heads left out (not registered here)."""
        notes: List[str] = []
        specs = parse_head_specs(list(self.heads), skip_unregistered=tuple(self.heads) == DEFAULT_HEADS, notes=notes)
        return specs, notes

    def reference_label(self, specs: Sequence[HeadSpec]) -> str:
        if self.reference is None:
            return specs[0].label
        for s in specs:
            if self.reference in (s.label, s.text, s.folder):
                return s.label
        raise ValueError(f"reference {self.reference!r} is not one of the heads: "
                         f"{', '.join(s.label for s in specs)}")


# --------------------------------------------------------------------------- evaluation
def _model_key(path: str) -> str:
    from ..fileio import sha256_file

    return sha256_file(path)


def evaluate_runs(runs: Sequence[Dict[str, Any]], ev, index, *, device: str = "cpu", progress: bool = True):
    """Raw features -> :class:`~lh2face_plugin.bench.scores.ScoreSet` for each run dict
    (``model``, ``model_path``, ``dir``, ``name``); features cached in the run's folder."""
    from .features import raw_features
    from .scores import ScoreSet

    out = []
    for r in runs:
        cache = os.path.join(r["dir"], f"features_{ev.sha256[:12]}.npy")
        feats = raw_features(r["model"], ev, device=device, cache=cache, model_key=_model_key(r["model_path"]),
                             progress=progress, desc=f"embed {r['name']}")
        out.append(ScoreSet.from_features(feats, ev, index))
    return out


# --------------------------------------------------------------------------- main job
def _check_out(out: str) -> None:
    path = os.path.join(out, "results.json")
    if os.path.exists(path):
        try:
            with open(path) as fh:
                ours = json.load(fh).get("format") == RESULTS_FORMAT
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise FileExistsError(f"{path} was not written by lh2face bench; choose another --out")


def _lr_tag(lr: float) -> str:
    return f"lr{lr:g}"


def _train(cfg: BenchConfig, spec: HeadSpec, seed: int, lr: float, out_dir: str, data_dir: str, data_key: str,
           progress: bool, echo, reuse_from: Sequence[str] = (), name: Optional[str] = None) -> Dict[str, Any]:
    from ..training import train_model

    name = name or f"{spec.label} seed{seed}"
    tr = train_model(cfg.train_config(lr, seed), data_dir, spec.name, out_dir, head_kwargs=spec.kwargs, label=name,
                     progress=progress, reuse_from=reuse_from, data_key=data_key, echo=echo,
                     input_module=spec.input_module, input_kwargs=spec.input_kwargs)
    return {"spec": spec, "seed": int(seed), "lr": float(lr), "dir": out_dir, "model": tr.model,
            "model_path": tr.model_path, "info": tr.info, "reused": tr.reused, "name": name}


def _lr_sweep(cfg: BenchConfig, specs: Sequence[HeadSpec], data_dir: str, data_key: str, progress: bool,
              echo) -> Dict[str, Any]:
    """Train every head at every swept learning rate (first training seed) and pick the best
    on the validation set (its own seed, disjoint from the evaluation set)."""
    from ..fileio import write_json
    from ..training import run_key
    from .bootstrap import bootstrap_metrics, percentile_ci
    from .evalset import EvalSetConfig, build_evalset
    from .scores import PairIndex

    out = os.path.abspath(cfg.out)
    echo(f"[lr sweep] validation set: {cfg.val_families} families (seed {cfg.val_seed}); "
         f"{len(specs)} heads x {len(cfg.lr_sweep)} learning rates, training seed {cfg.seeds[0]}")
    val = build_evalset(os.path.join(out, "valset"), EvalSetConfig(families=cfg.val_families, seed=cfg.val_seed),
                        progress=progress)
    index = PairIndex.build(val)
    table: Dict[str, Dict[str, Any]] = {}
    for spec in specs:
        runs, diverged = [], {}
        for lr in cfg.lr_sweep:
            d = os.path.join(out, "lr_sweep", spec.folder, _lr_tag(lr))
            marker = os.path.join(d, "diverged.json")
            key = run_key(cfg.train_config(lr, cfg.seeds[0]), spec.name, spec.kwargs, data_key, spec.input_module,
                          spec.input_kwargs)
            try:
                with open(marker) as fh:
                    old = json.load(fh)
                if old.get("key") == key:
                    diverged[float(lr)] = old.get("error", "diverged")
                    echo(f"      {spec.label} at lr={lr:g}: diverged in an earlier run (kept)")
                    continue
            except (OSError, ValueError, AttributeError):
                pass
            try:  # a comparison run of the same settings (same lr, first seed) is reused
                runs.append(_train(cfg, spec, cfg.seeds[0], lr, d, data_dir, data_key, progress, echo,
                                   name=f"{spec.label} {_lr_tag(lr)}",
                                   reuse_from=[os.path.join(out, spec.folder, f"seed{cfg.seeds[0]}")]))
            except FloatingPointError as exc:
                diverged[float(lr)] = str(exc)
                write_json(marker, {"key": key, "error": str(exc)})
                echo(f"      {spec.label} at lr={lr:g}: diverged ({exc})")
        sets = evaluate_runs(runs, val, index, device=cfg.device, progress=progress)
        point, reps = bootstrap_metrics(sets, val.num_families, min(cfg.bootstrap, 500), cfg.bootstrap_seed, progress,
                                 desc=f"bootstrap {spec.label}")
        rows = {}
        for r, p, rp in zip(runs, point, reps):
            ci = percentile_ci(rp[cfg.sweep_metric])
            rows[r["lr"]] = {"value": p[cfg.sweep_metric], "ci": ci, "clip": r["info"]["clip"]["fraction"],
                             "dir": os.path.relpath(r["dir"], out)}
        for lr, msg in diverged.items():
            rows[lr] = {"value": math.nan, "ci": [math.nan, math.nan], "diverged": msg}
        finite = {lr: v["value"] for lr, v in rows.items() if math.isfinite(v["value"])}
        if not finite:
            raise FloatingPointError(f"{spec.label}: every learning rate of the sweep diverged")
        best = max(finite, key=lambda lr: (finite[lr], -abs(math.log(lr / cfg.lr))))
        table[spec.label] = {"chosen": best, "rows": {f"{lr:g}": rows[lr] for lr in sorted(rows)}}
        vals = "  ".join(f"{lr:g}: {_fmt(cfg.sweep_metric, rows[lr]['value'])}" for lr in sorted(rows))
        echo(f"      {spec.label:<20} {vals}   -> lr {best:g}")
    return {"metric": cfg.sweep_metric, "learning_rates": [float(x) for x in cfg.lr_sweep],
            "seed": int(cfg.seeds[0]), "val_families": cfg.val_families, "val_seed": cfg.val_seed,
            "val_sha256": val.sha256, "heads": table}


def run_bench(cfg: BenchConfig, progress: bool = True, echo: Callable[[str], None] = print,
              command: Optional[str] = None) -> Dict[str, Any]:
    """Run the comparison; returns the summary also written to ``cfg.out/results.json``."""
    from ..data.synthetic import HIGH_QUALITY, generate_dataset
    from ..fileio import write_json
    from ..training import data_fingerprint
    from .bootstrap import bootstrap_metrics, compare_heads, summarize_heads
    from .evalset import EvalSetConfig, build_evalset, pair_counts
    from .scores import METRICS, PairIndex

    specs = cfg.validate()
    reference = cfg.reference_label(specs)
    t0 = time.perf_counter()
    out = os.path.abspath(cfg.out)
    os.makedirs(out, exist_ok=True)
    _check_out(out)
    for note in cfg.head_specs()[1]:
        echo(f"note: {note}")
    seeds = [int(s) for s in cfg.seeds]
    n_runs = len(specs) * len(seeds)
    echo(f"[1/5] training data: {cfg.identities} identities x {cfg.images_per_id} images (data seed {cfg.data_seed})")
    paths = generate_dataset(os.path.join(out, "data"), identities=cfg.identities, images_per_id=cfg.images_per_id,
                             seed=cfg.data_seed, eval_identities=8, verify_pairs=20, render_eval=0, progress=progress)
    data_dir = os.path.dirname(paths["rec"])
    data_key = data_fingerprint(data_dir)

    ev_cfg = EvalSetConfig(families=cfg.families, seed=cfg.eval_seed)
    echo(f"[2/5] evaluation set: {cfg.families} families x 3 look-alike identities x "
         f"({ev_cfg.hq_per_id} HQ + {ev_cfg.lq_per_id} LQ) images (seed {cfg.eval_seed})")
    ev = build_evalset(os.path.join(out, "evalset"), ev_cfg, progress=progress)
    index = PairIndex.build(ev)
    counts = pair_counts(ev)
    echo(f"      {len(ev)} images ({int(ev.hq.sum())} HQ: quality >= {HIGH_QUALITY}; {int((~ev.hq).sum())} LQ); "
         f"pairs genuine/impostor: hard-HQ {counts['hard_hq']['genuine']}/{counts['hard_hq']['impostor']}, "
         f"yawed {counts['yawed']['genuine']}/{counts['yawed']['impostor']}, all-HQ "
         f"{counts['all_hq']['genuine']}/{counts['all_hq']['impostor']}, overall "
         f"{counts['overall']['genuine']}/{counts['overall']['impostor']}")

    sweep = None
    lrs = {s.label: float(cfg.lr) for s in specs}
    if cfg.lr_sweep:
        sweep = _lr_sweep(cfg, specs, data_dir, data_key, progress, echo)
        lrs = {label: float(v["chosen"]) for label, v in sweep["heads"].items()}

    echo(f"[3/5] train {n_runs} runs: {len(specs)} heads x seeds {', '.join(map(str, seeds))}; {cfg.network}, "
         f"{cfg.total_steps} steps x {cfg.batch_size} images, clip {cfg.clip}")
    runs: List[Dict[str, Any]] = []
    trained_seconds, trained = 0.0, 0
    for spec in specs:
        for seed in seeds:
            d = os.path.join(out, spec.folder, f"seed{seed}")
            donors = [os.path.join(out, "lr_sweep", spec.folder, _lr_tag(lrs[spec.label]))] \
                if sweep and seed == seeds[0] else []
            r = _train(cfg, spec, seed, lrs[spec.label], d, data_dir, data_key, progress, echo, reuse_from=donors)
            runs.append(r)
            left = n_runs - len(runs)
            if r["reused"]:
                echo(f"      {r['name']}: reused {os.path.relpath(r['model_path'], out)}")
            else:
                trained += 1
                trained_seconds += r["info"]["seconds"]
                eta = f"; {left} to go, about {left * trained_seconds / trained / 60:.0f} min at this pace" \
                    if left else ""
                echo(f"      {r['name']}: trained in {r['info']['seconds']:.0f} s, clipped "
                     f"{100 * r['info']['clip']['fraction']:.0f}% of the steps{eta}")

    echo(f"[4/5] evaluate {n_runs} models on the evaluation set; bootstrap over families ({cfg.bootstrap} replicates)")
    sets = evaluate_runs(runs, ev, index, device=cfg.device, progress=progress)
    point, reps = bootstrap_metrics(sets, ev.num_families, cfg.bootstrap, cfg.bootstrap_seed, progress)
    labels = [s.label for s in specs]
    by_head = {lab: [k for k, r in enumerate(runs) if r["spec"].label == lab] for lab in labels}
    heads: Dict[str, Dict[str, Any]] = {}
    diffs: Dict[str, Dict[str, Any]] = {lab: {} for lab in labels if lab != reference}
    ci_half: Dict[str, Dict[str, float]] = {}
    for m in METRICS:
        pv = {lab: [point[k][m] for k in ks] for lab, ks in by_head.items()}
        rv = {lab: [reps[k][m] for k in ks] for lab, ks in by_head.items()}
        for lab, s in summarize_heads(pv, rv).items():
            heads.setdefault(lab, {"metrics": {}})["metrics"][m] = s
        for lab, d in compare_heads(pv, rv, reference).items():
            diffs[lab][m] = d
        single = [percentile_ci_width(reps[k][m]) for k in range(len(runs))]
        heads_half = [heads[lab]["metrics"][m]["half_width"] for lab in labels]
        diff_half = [diffs[lab][m]["half_width"] for lab in diffs]
        ci_half[m] = {"single_run_median": _nanmedian(single), "head_median": _nanmedian(heads_half),
                      "difference_median": _nanmedian(diff_half)}
    for spec in specs:
        ks = by_head[spec.label]
        h = heads[spec.label]
        h.update(head=spec.name, kwargs=spec.kwargs, spec=spec.text, input_module=spec.input_module,
                 input_kwargs=spec.input_kwargs, lr=lrs[spec.label], seeds=[runs[k]["seed"] for k in ks],
                 clip_fraction=float(np.mean([runs[k]["info"]["clip"]["fraction"] for k in ks])),
                 clip_fraction_last_quarter=float(np.mean([runs[k]["info"]["clip"]["fraction_last_quarter"]
                                                           for k in ks])),
                 train_accuracy=float(np.mean([runs[k]["info"]["final"]["accuracy"] for k in ks])),
                 train_norm=float(np.mean([runs[k]["info"]["final"]["norm"] for k in ks])))

    echo("[5/5] results")
    plots = _plots(out, runs, sets, heads, diffs, reference, sweep)
    run_rows = []
    for r, p, s in zip(runs, point, sets):
        info = r["info"]
        run_rows.append({
            "label": r["spec"].label, "head": r["spec"].name, "head_kwargs": r["spec"].kwargs,
            "input_module": r["info"].get("input_module"), "seed": r["seed"],
            "lr": r["lr"], "model": os.path.relpath(r["model_path"], out), "network": cfg.network,
            "embedding_size": cfg.embedding_size, "reused": r["reused"], "train_seconds": info["seconds"],
            "clip": info["clip"], "head_state": info["head_state"], "final": info["final"],
            "metrics": p, "summary": s.summary()})
    first = run_rows[0]
    summary = {
        "format": RESULTS_FORMAT, "version": 1, "command": command, "config": _config_dict(cfg),
        "steps": cfg.total_steps,
        "train_data": {"path": os.path.relpath(data_dir, out), "fingerprint": data_key, "seed": cfg.data_seed,
                       "identities": cfg.identities, "images_per_id": cfg.images_per_id},
        "evalset": {"path": os.path.relpath(ev.path, out), "sha256": ev.sha256, "config": ev.config.as_dict(),
                    "images": len(ev), "hq_images": int(ev.hq.sum()), "pairs": counts,
                    "quality_threshold": HIGH_QUALITY},
        "metrics": METRICS, "reference": reference,
        "bootstrap": {"replicates": cfg.bootstrap, "seed": cfg.bootstrap_seed, "unit": "family",
                      "pooling": "per replicate, a head's value is the mean over its training seeds; differences "
                                 "head - reference are taken per replicate; 95% percentile intervals",
                      "win_rule": "win/loss only when the 95% interval excludes 0 and |difference| exceeds the "
                                  "seed spread (the larger of the two heads' per-seed ranges)"},
        "ci_half_width": ci_half, "heads": heads, "differences": diffs, "runs": run_rows, "lr_sweep": sweep,
        "plots": plots,
        "reevaluate": f"lh2face eval verify FILE.bin --model {os.path.join(out, first['model'])} "
                      f"--network {cfg.network}",
        "wall_seconds": time.perf_counter() - t0,
    }
    write_json(os.path.join(out, "results.json"), to_json(summary))
    echo("")
    for line in format_report(summary):
        echo(line)
    echo("")
    echo(f"results: {os.path.join(out, 'results.json')}")
    echo("plots:   " + "\n         ".join(plots.values()))
    echo(f"models:  {out}/<head>/seed<k>/model.pt (network {cfg.network}); e.g. {summary['reevaluate']}")
    echo(f"wall time {summary['wall_seconds']:.0f} s")
    return summary


def percentile_ci_width(values: np.ndarray) -> float:
    from .bootstrap import percentile_ci

    lo, hi = percentile_ci(values)
    return (hi - lo) / 2.0


def _nanmedian(values: Sequence[float]) -> float:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    return float(np.median(v)) if v.size else math.nan


def _config_dict(cfg: BenchConfig) -> Dict[str, Any]:
    d = dataclasses.asdict(cfg)
    d["heads"], d["seeds"], d["lr_sweep"] = list(cfg.heads), list(cfg.seeds), list(cfg.lr_sweep)
    return d


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


# --------------------------------------------------------------------------- report
def format_report(summary: Dict[str, Any]) -> List[str]:
    """The printed tables: per head (seed-mean [95% CI]), then differences to the reference."""
    from ..eval.report import table

    ev, heads, ref = summary["evalset"], summary["heads"], summary["reference"]
    pairs = ev["pairs"]
    lines = [
        f"evaluation set: {ev['config']['families']} families x 3 look-alikes (seed {ev['config']['seed']}), "
        f"{ev['images']} images, {ev['hq_images']} HQ (quality >= {ev['quality_threshold']}); hard-HQ pairs: "
        f"{pairs['hard_hq']['genuine']} genuine / {pairs['hard_hq']['impostor']} look-alike impostors",
        "TAR, AUC in %; per head: mean over training seeds [95% CI, bootstrap over families]",
    ]
    header = ["head", "seeds", "lr"] + [short for _, short in TABLE_METRICS] + ["clip%"]
    rows = []
    for lab, h in heads.items():
        cells = [lab + (" (ref)" if lab == ref else ""), str(len(h["seeds"])), f"{h['lr']:g}"]
        for m, _ in TABLE_METRICS:
            s = h["metrics"][m]
            lo, hi = s["ci"]
            signed = not _is_rate(m)
            cells.append(f"{_fmt(m, s['mean'], signed)} [{_fmt(m, lo, signed)},{_fmt(m, hi, signed)}]")
        cells.append(f"{100 * h['clip_fraction']:.0f}")
        rows.append(cells)
    lines += [table(header, rows), ""]
    half = summary["ci_half_width"]
    for m in ("hard_hq_tar@1e-1", "hard_hq_tar@1e-2"):
        lines.append(f"achieved 95% CI half-width, {m}: one run +-{100 * half[m]['single_run_median']:.1f} points, "
                     f"a head (seed mean) +-{100 * half[m]['head_median']:.1f}, a paired difference "
                     f"+-{100 * half[m]['difference_median']:.1f} (medians)")
    if summary["differences"]:
        lines += ["", f"differences vs {ref} (paired bootstrap over families, seeds averaged per replicate; "
                      "win = CI excludes 0 and |diff| > seed spread)"]
        header = ["head", "metric", "diff", "95% CI", "seed spread", "verdict"]
        rows = []
        for lab, per in summary["differences"].items():
            for m, _ in TABLE_METRICS + (("yawed_tar@1e-1", ""),):
                d = per[m]
                lo, hi = d["ci"]
                sp = d["seed_spread"]
                rows.append([lab, m, _fmt(m, d["diff"], True), f"[{_fmt(m, lo, True)}, {_fmt(m, hi, True)}]",
                             _fmt(m, sp) if sp is not None else "n/a", d["verdict"]])
        lines.append(table(header, rows))
    if summary.get("lr_sweep"):
        sw = summary["lr_sweep"]
        lines += ["", f"learning rate per head (sweep on the validation set, {sw['metric']}, seed {sw['seed']}): "
                  + ", ".join(f"{lab} {v['chosen']:g}" for lab, v in sw["heads"].items())]
    return lines


def _plots(out: str, runs, sets, heads, diffs, reference, sweep) -> Dict[str, str]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    from ..eval.plots import plot_roc
    from ..fileio import atomic_path
    from ..training import plot_training

    plots = {}
    curves = {r["name"]: s.roc("hard_hq") for r, s in zip(runs, sets)}
    plots["roc_hard_hq"] = plot_roc(curves, os.path.join(out, "roc_hard_hq.png"),
                                    title="hard high-quality pairs (look-alike impostors)", fars=(1e-3, 1e-2, 1e-1))
    plots["training"] = plot_training({r["name"]: r["info"]["history"] for r in runs},
                                      os.path.join(out, "training.png"))
    if diffs:
        fig = Figure(figsize=(3.2 * len(FOREST_METRICS), 0.5 * len(diffs) + 1.8), dpi=100)
        labels = list(diffs)
        for k, m in enumerate(FOREST_METRICS):
            ax = fig.add_subplot(1, len(FOREST_METRICS), k + 1)
            scale = 100.0 if _is_rate(m) else 1.0
            for y, lab in enumerate(labels):
                d = diffs[lab][m]
                lo, hi = (v * scale if v is not None and math.isfinite(v) else math.nan for v in d["ci"])
                sp = d["seed_spread"]
                if sp is not None and math.isfinite(sp):
                    ax.fill_betweenx([y - 0.3, y + 0.3], -sp * scale, sp * scale, color="0.85", lw=0)
                colour = {"win": "tab:green", "loss": "tab:red"}.get(d["verdict"], "tab:blue")
                ax.errorbar([d["diff"] * scale], [y], xerr=[[d["diff"] * scale - lo], [hi - d["diff"] * scale]],
                            fmt="o", color=colour, capsize=3)
            ax.axvline(0, color="k", lw=0.8)
            ax.set_yticks(range(len(labels)))
            ax.set_yticklabels(labels if k == 0 else [""] * len(labels))
            ax.set_ylim(-0.7, len(labels) - 0.3)
            ax.set_title(m + (" (points)" if _is_rate(m) else ""), fontsize=9)
        fig.suptitle(f"difference vs {reference}: 95% CI (bars), seed spread (grey)", fontsize=10)
        fig.tight_layout()
        path = os.path.join(out, "forest.png")
        with atomic_path(path, ".png") as tmp:
            fig.savefig(tmp, format="png")
        plots["forest"] = path
    if sweep:
        fig = Figure(figsize=(6, 4), dpi=100)
        ax = fig.add_subplot(1, 1, 1)
        for lab, v in sweep["heads"].items():
            xs = [float(x) for x in v["rows"]]
            ys = [100 * (row["value"] if row["value"] is not None else math.nan) for row in v["rows"].values()]
            ax.plot(xs, ys, "o-", label=lab)
        ax.set(xscale="log", xlabel="peak learning rate", ylabel=f"{sweep['metric']} (%, validation set)",
               title="learning-rate sweep")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(out, "lr_sweep.png")
        with atomic_path(path, ".png") as tmp:
            fig.savefig(tmp, format="png")
        plots["lr_sweep"] = path
    return plots
