"""The steps of the one comparison (:func:`lh2face_plugin.bench.runner.run`, which ``lh2face bench`` and
``lh2face quickstart`` both run): training data, held-out evaluation set, runs, raw features, pair scores,
results, paired bootstrap."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..fileio import sha256_file
from .bootstrap import bootstrap_metrics, compare_heads, percentile_ci, summarize_heads
from .evalset import EvalSet, EvalSetConfig, build_evalset, pair_counts
from .features import cached_features, raw_features
from .metrics import Difference, Estimate
from .power import MDE_METRICS, detectable_effect, minimal_detectable_effect
from .records import Comparison, HeadSummary, Run, RunResult, result_key
from .scores import METRICS, PairIndex, ScoreSet
from .specs import HeadSpec

__all__ = ["TrainData", "EvalContext", "prepare_data", "prepare_evalset", "train_run", "score_runs",
           "score_results", "run_result", "compare"]


@dataclass
class TrainData:
    """The synthetic training set: its folder, content digest and every file of the dataset."""

    dir: str
    key: str
    paths: Dict[str, str]


@dataclass
class EvalContext:
    """The held-out evaluation set with its pair index and pair counts."""

    ev: EvalSet
    index: PairIndex
    counts: Dict[str, Dict[str, int]]

    @property
    def sha256(self) -> str:
        return self.ev.sha256


def prepare_data(folder: str, identities: int, images_per_id: int, seed: int, progress: bool = True,
                 **generate_kwargs) -> TrainData:
    """Generate (or reuse) the synthetic dataset in ``folder``."""
    from ..data.synthetic import generate_dataset  # lazy: torch (the bench package imports without it)
    from ..training import data_fingerprint  # lazy: torch

    paths = generate_dataset(folder, identities=identities, images_per_id=images_per_id, seed=seed,
                             progress=progress, **generate_kwargs)
    data_dir = os.path.dirname(paths["rec"])
    return TrainData(data_dir, data_fingerprint(data_dir), paths)


def prepare_evalset(folder: str, families: int, seed: int, progress: bool = True) -> EvalContext:
    """Build (or reuse) the look-alike evaluation set in ``folder``."""
    ev = build_evalset(folder, EvalSetConfig(families=families, seed=seed), progress=progress)
    return EvalContext(ev, PairIndex.build(ev), pair_counts(ev))


def train_run(spec: HeadSpec, seed: int, lr: float, train_config: Callable[[float, int], Any], data: TrainData,
              run_dir: str, *, name: Optional[str] = None, progress: bool = True,
              echo: Callable[[str], None] = print, reuse_from: Sequence[str] = ()) -> Run:
    """Train (or reuse) ``spec`` with ``train_config(lr, seed)`` in ``run_dir``."""
    from ..training import train_model  # lazy: torch

    name = name or f"{spec.label} seed{seed}"
    tr = train_model(train_config(lr, seed), data.dir, spec, run_dir, label=name, progress=progress,
                     reuse_from=reuse_from, data_key=data.key, echo=echo)
    return Run(spec, int(seed), float(lr), run_dir, name, tr)


def _features(run_dir: str, model_sha256: str, ctx: EvalContext, model_loader: Callable[[], Any], device: str,
              progress: bool, desc: str) -> np.ndarray:
    cache = os.path.join(run_dir, f"features_{ctx.sha256[:12]}.npy")
    feats = cached_features(cache, model_sha256, ctx.ev)
    if feats is not None:
        return feats
    return raw_features(model_loader(), ctx.ev, device=device, cache=cache, model_key=model_sha256,
                        progress=progress, desc=desc)


def score_runs(runs: Sequence[Run], ctx: EvalContext, *, device: str = "cpu", progress: bool = True) -> List[Any]:
    """:class:`~lh2face_plugin.bench.scores.ScoreSet` of each run (raw features cached in its folder)."""
    out = []
    for r in runs:
        feats = _features(r.dir, sha256_file(r.model_path), ctx, lambda r=r: r.model, device, progress,
                          f"embed {r.name}")
        out.append(ScoreSet.from_features(feats, ctx.ev, ctx.index))
    return out


def score_results(results: Sequence[RunResult], out: str, ctx: EvalContext, *, device: str = "cpu",
                  progress: bool = True) -> List[Any]:
    """ScoreSets of stored results: features from their run folder's cache, else from the saved model
    (reloaded with :func:`~lh2face_plugin.training.load_trained_model`); nothing is trained."""
    from ..training import load_trained_model  # lazy: torch

    sets = []
    for r in results:
        model_path = os.path.join(out, r.model)
        feats = _features(os.path.join(out, r.dir), r.model_sha256, ctx, lambda p=model_path: load_trained_model(p),
                          device, progress, f"embed {r.label} seed{r.seed}")
        sets.append(ScoreSet.from_features(feats, ctx.ev, ctx.index))
    return sets


def run_result(run: Run, scores: Any, data: TrainData, ctx: EvalContext, out: str,
               evaluations: Optional[Mapping[str, float]] = None) -> RunResult:
    """The stored record of ``run`` scored on ``ctx`` (paths relative to ``out``), with a preset's own
    ``evaluations`` of the model (:attr:`~lh2face_plugin.bench.records.RunResult.evaluations`)."""
    info = run.info
    return RunResult(
        key=result_key(info["key"], ctx.sha256), run_key=info["key"], label=run.spec.label, spec=run.spec.text,
        head=run.spec.name, head_kwargs=dict(run.spec.kwargs), hparams=dict(run.spec.hparams),
        input_module=info.get("input_module"), seed=run.seed, lr=run.lr, dir=os.path.relpath(run.dir, out),
        model=os.path.relpath(run.model_path, out), model_sha256=info["model_sha256"], network=info["network"],
        embedding_size=int(info["embedding_size"]), train=dict(info["settings"]), data=data.key, evalset=ctx.sha256,
        train_seconds=run.seconds, clip=dict(info["clip"]), head_state=dict(info["head_state"]),
        final=dict(info["final"]), metrics=scores.metrics(None), summary=scores.summary(),
        far_measured=scores.far_measured(), evaluations=dict(evaluations or {}), reused=run.reused)


def _nanmedian(values: Sequence[float]) -> float:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    return float(np.median(v)) if v.size else math.nan


def _mean_evaluations(rs: Sequence[RunResult]) -> Dict[str, float]:
    """Each evaluation's mean over the runs with a finite value of it (NaN where none has one)."""
    names = list(dict.fromkeys(k for r in rs for k in r.evaluations))
    out = {}
    for name in names:
        v = [r.evaluations[name] for r in rs if name in r.evaluations and math.isfinite(r.evaluations[name])]
        out[name] = float(np.mean(v)) if v else math.nan
    return out


def compare(results: Sequence[RunResult], scores: Sequence[Any], num_families: int, *, reference: str,
            replicates: int, bootstrap_seed: int = 0, control: Optional[str] = None,
            progress: bool = True) -> Comparison:
    """Heads (results grouped by label, in first-seen order) compared with the paired bootstrap over
    families (:mod:`~lh2face_plugin.bench.bootstrap`), every run on the same replicates."""
    point, reps = bootstrap_metrics(scores, num_families, replicates, bootstrap_seed, progress)
    by_head: Dict[str, List[int]] = {}
    for k, r in enumerate(results):
        by_head.setdefault(r.label, []).append(k)
    if reference not in by_head:
        raise ValueError(f"reference {reference!r} is not one of the heads: {', '.join(by_head)}")
    metrics: Dict[str, Dict[str, Estimate]] = {lab: {} for lab in by_head}
    diffs: Dict[str, Dict[str, Difference]] = {lab: {} for lab in by_head if lab != reference}
    ci_half: Dict[str, Dict[str, float]] = {}
    for m in METRICS:
        pv = {lab: [point[k][m] for k in ks] for lab, ks in by_head.items()}
        rv = {lab: [reps[k][m] for k in ks] for lab, ks in by_head.items()}
        for lab, s in summarize_heads(pv, rv).items():
            metrics[lab][m] = s
        for lab, d in compare_heads(pv, rv, reference).items():
            diffs[lab][m] = replace(d, mde=minimal_detectable_effect(d.diff, d.ci, d.seed_spread))
        ci_half[m] = {"single_run_median": _nanmedian([percentile_ci(reps[k][m]).half_width
                                                       for k in range(len(results))]),
                      "head_median": _nanmedian([metrics[lab][m].half_width for lab in by_head]),
                      "difference_median": _nanmedian([diffs[lab][m].half_width for lab in diffs])}
    heads = {}
    for lab, ks in by_head.items():
        rs = [results[k] for k in ks]
        heads[lab] = HeadSummary(
            label=lab, spec=rs[0].spec, head=rs[0].head, head_kwargs=rs[0].head_kwargs,
            input_module=rs[0].input_module, lr=rs[0].lr, seeds=[r.seed for r in rs], metrics=metrics[lab],
            clip_fraction=float(np.mean([r.clip["fraction"] for r in rs])),
            clip_fraction_last_quarter=float(np.mean([r.clip["fraction_last_quarter"] for r in rs])),
            train_accuracy=float(np.mean([r.final["accuracy"] for r in rs])),
            train_norm=float(np.mean([r.final["norm"] for r in rs])), evaluations=_mean_evaluations(rs))
    mde = {m: detectable_effect(diffs, m) for m in MDE_METRICS} if diffs else {}
    return Comparison(reference, heads, diffs, ci_half, mde, control if control in by_head else None,
                      int(replicates), int(bootstrap_seed))
