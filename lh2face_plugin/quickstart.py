"""The main job of the README's first command: synthetic data -> three heads trained -> evaluated -> exported.

``lh2face quickstart`` runs, on CPU in minutes:

1. the embedded synthetic dataset (:func:`lh2face_plugin.data.synthetic.generate_dataset`);
2. the same backbone trained with the ``lh2face`` head, an ``arcface`` baseline and a
   scale-matched ``cosface`` (s=24, LH2Face's mean kappa; METHODS.md section 6), through
   :mod:`lh2face_plugin.training` (same data, order, initialisation and schedule; one
   training seed, separate from the data's);
3. each evaluated on the synthetic verification ``.bin`` (10-fold accuracy) and the
   IJB-style template set (TAR@FAR), and on the hard high-quality split of a held-out
   look-alike set (:mod:`lh2face_plugin.bench.evalset`), with its pair counts and 95%
   bootstrap intervals over families;
4. the first head's model exported to ONNX, packed for insightface's model zoo, loaded
   back through insightface and its embedding compared with torch's;
5. a comparison table, ``results.json`` and PNG plots.

Steps 1-3's data, held-out set, runs, hard-HQ scores and bootstrap are the comparison pipeline
``lh2face bench`` uses (:mod:`lh2face_plugin.bench.pipeline`); the verification and IJB
evaluations, the export and the pack are the quickstart's own. One training seed cannot rank
heads; ``lh2face bench`` can (seeds, paired intervals).
Every stage writes its outputs atomically and a rerun with the same settings reuses
them (data, evaluation set, trained models, cached features, the pack).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, Sequence, Union

import numpy as np

from .headspec import preset

__all__ = ["QuickstartConfig", "QuickstartHead", "run_quickstart", "DEFAULT_QUICKSTART_HEADS"]

DEFAULT_QUICKSTART_HEADS = ("lh2face", "arcface", preset("cosface-s24"))
"""LH2Face (exported), ArcFace at arcface_torch's defaults, CosFace at LH2Face's logit scale."""


@dataclass
class QuickstartConfig:
    """Settings of :func:`run_quickstart` (the CLI flags of ``lh2face quickstart``).

    Attributes:
        out: output folder.
        identities, images_per_id: size of the synthetic training set.
        steps: optimisation steps per head.
        batch_size: images per step.
        network: backbone name (``compact-tiny``, ``compact``, ``compact-wide``).
        embedding_size: feature dimension.
        lr: peak SGD learning rate (linear warm-up over 5% of the steps, then
            polynomial decay to 0, as arcface_torch's schedule).
        clip: gradient clipping (:class:`lh2face_plugin.training.TrainConfig`).
        heads: head specs ``[LABEL=]NAME[:k=v,...]``; the first one is exported.
        device: ``cpu`` or ``cuda``.
        seed: the training data's seed.
        train_seed: initialisation, batch order and flips (the same for every head).
        eval_families, eval_seed: the held-out look-alike set of the hard-HQ numbers.
        bootstrap: replicates of the bootstrap over families.
        workers: DataLoader worker processes.
    """

    out: str = "lh2face_runs/quickstart"
    identities: int = 200
    images_per_id: int = 20
    steps: int = 200
    batch_size: int = 64
    network: str = "compact-tiny"
    embedding_size: int = 512
    lr: float = 0.1
    clip: Union[str, float] = "scaled"
    heads: Sequence[str] = DEFAULT_QUICKSTART_HEADS
    device: str = "cpu"
    seed: int = 0
    train_seed: int = 0
    eval_families: int = 40
    eval_seed: int = 1
    bootstrap: int = 1000
    workers: int = 1

    def bench(self):
        """The same comparison as a :class:`~lh2face_plugin.bench.config.BenchConfig`: one training seed
        (``train_seed``), the data seed ``seed``, ``eval_families`` held-out families."""
        from .bench.config import BenchConfig

        return BenchConfig(out=self.out, heads=tuple(self.heads), seeds=(int(self.train_seed),), steps=self.steps,
                           batch_size=self.batch_size, network=self.network, embedding_size=self.embedding_size,
                           lr=self.lr, clip=self.clip, identities=self.identities, images_per_id=self.images_per_id,
                           data_seed=self.seed, families=self.eval_families, eval_seed=self.eval_seed,
                           bootstrap=self.bootstrap, device=self.device, workers=self.workers)

    def train_config(self, lr: float, seed: int):
        """The training settings of every head (``lr``, ``seed``: this config's ``lr`` and ``train_seed``):
        the bench's (:meth:`bench`)."""
        return self.bench().train_config(lr, seed)

    def validate(self):
        """Check every setting; returns the parsed head specs."""
        from .bench.specs import parse_head_spec, parse_head_specs

        for key in ("identities", "images_per_id", "steps", "eval_families", "bootstrap"):
            value = getattr(self, key)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if self.identities < 2:
            raise ValueError(f"identities must be >= 2, got {self.identities}")
        if self.eval_seed == self.seed:
            raise ValueError(f"eval_seed must differ from the data seed (other identities), both are {self.seed}")
        if not self.heads:
            raise ValueError("heads must name at least one head")
        self.train_config(self.lr, self.train_seed).validate()
        try:
            return parse_head_specs(list(self.heads))
        except KeyError as exc:
            from .registry import HEADS

            known = set(HEADS.names())
            bad = next(parse_head_spec(h).name for h in self.heads if parse_head_spec(h).name not in known)
            raise ValueError(f"heads: unknown head {bad!r}; known: {', '.join(HEADS.names())}") from exc


@dataclass
class QuickstartHead:
    """One head of the quickstart: its run, its verification and IJB results and its hard-HQ summary
    (:class:`~lh2face_plugin.bench.records.HeadSummary`, one seed)."""

    run: Any
    verify: Dict[str, Any]
    ijb: Dict[str, Any]
    hard_hq: Any


_FLIP = {"win": "loss", "loss": "win"}  # verdicts of h - first, printed as first - h
_DIFF_METRICS = ("hard_hq_tar@1e-1", "hard_hq_tar@1e-2")


def _fmt_ci(value: float, ci: Sequence[float]) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{100 * value:.1f} [{100 * ci[0]:.1f},{100 * ci[1]:.1f}]"


def _format_table(results: Dict[str, QuickstartHead]) -> str:
    heads = list(results)

    def hh(metric):
        return lambda r: _fmt_ci(r.hard_hq.metrics[metric].mean, r.hard_hq.metrics[metric].ci)

    rows = [
        ("verify.bin accuracy (10-fold)", lambda r: f"{100 * r.verify['accuracy']:.2f}%"),
        ("IJB-SYNTH TAR@FAR=1e-3", lambda r: f"{100 * r.ijb['tar_at_far'][1e-3]:.2f}%"),
        ("IJB-SYNTH TAR@FAR=1e-2", lambda r: f"{100 * r.ijb['tar_at_far'][1e-2]:.2f}%"),
        ("IJB-SYNTH TAR@FAR=1e-1", lambda r: f"{100 * r.ijb['tar_at_far'][1e-1]:.2f}%"),
        ("IJB-SYNTH AUC", lambda r: f"{r.ijb['auc']:.4f}"),
        ("hard HQ TAR@FAR=1e-1 [95% CI]", hh("hard_hq_tar@1e-1")),
        ("hard HQ TAR@FAR=1e-2 [95% CI]", hh("hard_hq_tar@1e-2")),
        ("hard HQ AUC [95% CI]", hh("hard_hq_auc")),
        ("rho(|z|, quality)", lambda r: f"{r.hard_hq.metrics['rho_norm_quality'].mean:+.3f}"),
        ("train accuracy (last 20 steps)",
         lambda r: f"{100 * np.mean(r.run.trained.history['accuracy'][-20:]):.1f}%"),
        ("clipped steps", lambda r: f"{100 * r.run.clip_fraction:.0f}%"),
        ("train time", lambda r: f"{r.run.seconds:.0f} s"),
    ]
    width = max(len(r[0]) for r in rows) + 2
    col = max(18, max(len(h) for h in heads) + 2)
    lines = ["".ljust(width) + "".join(h.rjust(col) for h in heads)]
    for label, fn in rows:
        lines.append(label.ljust(width) + "".join(_cell(fn, results[h]).rjust(col) for h in heads))
    return "\n".join(lines)


def _cell(fn: Callable[[QuickstartHead], str], result: QuickstartHead) -> str:
    """A table cell; ``n/a`` where the value cannot be computed (e.g. a split without genuine pairs)."""
    text = fn(result)
    return "n/a" if "nan" in text.lower() else text


def run_quickstart(cfg: QuickstartConfig, progress: bool = True, echo: Callable[[str], None] = print) -> Dict[str, Any]:
    """Run the whole job; returns the results (also written to ``cfg.out/results.json``).

    Data, evaluation set, training, hard-HQ scores and the bootstrap go through the comparison
    pipeline ``lh2face bench`` uses (:mod:`lh2face_plugin.bench.pipeline`); the verification and
    IJB evaluations, the export and the pack are the quickstart's own."""
    from .bench.pipeline import compare, prepare_data, prepare_evalset, run_result, score_runs, train_run
    from .bench.results import to_json
    from .data.synthetic import HIGH_QUALITY, IJB_TARGET
    from .eval import evaluate_ijb, evaluate_verification, torch_embedder
    from .eval.plots import plot_roc
    from .export.modelzoo import pack_model_zoo, verify_pack
    from .export.onnx import export_onnx
    from .fileio import derived, sha256_file, write_json
    from .training import plot_training

    specs = cfg.validate()
    t0 = time.perf_counter()
    out = os.path.abspath(cfg.out)
    os.makedirs(out, exist_ok=True)

    echo(f"[1/4] synthetic data: {cfg.identities} identities x {cfg.images_per_id} images -> {out}/data; "
         f"held-out look-alike set: {cfg.eval_families} families -> {out}/evalset")
    data = prepare_data(os.path.join(out, "data"), cfg.identities, cfg.images_per_id, cfg.seed, progress)
    ctx = prepare_evalset(os.path.join(out, "evalset"), cfg.eval_families, cfg.eval_seed, progress)
    counts = ctx.counts["hard_hq"]

    runs, own = [], {}
    for spec in specs:
        echo(f"[2/4] train {cfg.network} with the {spec.label} head: {cfg.steps} steps x {cfg.batch_size} images")
        run = train_run(spec, cfg.train_seed, cfg.lr, cfg.train_config, data, os.path.join(out, spec.folder),
                        name=spec.label, progress=progress, echo=echo)
        if run.reused:
            echo(f"      reused {run.model_path}")
        embed = torch_embedder(run.model, device=cfg.device)
        key = sha256_file(run.model_path)[:16]
        echo(f"[3/4] evaluate {spec.label}")
        cache = os.path.join(run.dir, "features")
        verify = evaluate_verification(embed, data.paths["verify_bin"], cache_dir=os.path.join(cache, "verify"),
                                       cache_key=key)
        ijb = evaluate_ijb(embed, data.paths["ijb"], IJB_TARGET, cache_dir=os.path.join(cache, "ijb"),
                           cache_key=key, identification=False)
        runs.append(run)
        own[spec.label] = (verify, ijb)

    sets = score_runs(runs, ctx, device=cfg.device, progress=progress)
    first = specs[0].label
    comparison = compare([run_result(r, s, data, ctx, out) for r, s in zip(runs, sets)], sets,
                         ctx.ev.num_families, reference=first, replicates=cfg.bootstrap, progress=progress)
    results = {r.spec.label: QuickstartHead(r, *own[r.spec.label], comparison.heads[r.spec.label]) for r in runs}
    diffs = {m: {h: per[m] for h, per in comparison.differences.items()}
             for m in _DIFF_METRICS} if len(results) > 1 else {}

    echo(f"[4/4] export the {first} model to ONNX and an insightface model-zoo pack")
    first_spec = specs[0]
    onnx_path = os.path.join(out, first_spec.folder, "recognition.onnx")
    pack_dir = os.path.join(out, f"pack_{first_spec.folder}")
    model = results[first].run.model
    with _quiet_third_party():
        report = export_onnx(model, onnx_path)
        pack_model_zoo(onnx_path, pack_dir, model_id=f"{first_spec.folder}-quickstart")
        zoo = verify_pack(pack_dir, reference=model)

    hard_set = {"families": cfg.eval_families, "seed": cfg.eval_seed, "genuine_pairs": counts["genuine"],
                "impostor_pairs": counts["impostor"], "quality_threshold": HIGH_QUALITY,
                "bootstrap": cfg.bootstrap, "sha256": ctx.sha256}
    summary = {
        "config": {**dataclasses.asdict(cfg), "heads": list(cfg.heads)},
        "hard_hq_set": hard_set,
        "heads": {h: {"head": r.run.spec.name, "head_kwargs": r.run.spec.kwargs,
                      "verify": {k: r.verify[k] for k in ("accuracy", "accuracy_std", "xnorm", "auc")},
                      "ijb": {k: r.ijb.get(k) for k in ("tar_at_far", "far_measured", "tar_at_far_unresolved",
                                                        "auc", "pairs", "duplicate_pairs", "templates")},
                      "hard_hq": {m: e.to_dict() for m, e in r.hard_hq.metrics.items()},
                      "clip": r.run.info["clip"], "train_seconds": r.run.seconds,
                      "model": r.run.model_path, "network": cfg.network}
                  for h, r in results.items()},
        "differences": {m: {h: d.to_dict(mde=False) for h, d in per.items()} for m, per in diffs.items()},
        "export": {"onnx": onnx_path, "parity": dataclasses.asdict(report) if dataclasses.is_dataclass(report)
                   else str(report), "pack": pack_dir, "insightface": zoo},
        "plots": {}, "wall_seconds": time.perf_counter() - t0,
    }
    results_path = os.path.join(out, "results.json")
    write_json(results_path, to_json(summary))  # the measured results first; plots and the table derive from them

    def draw():
        return {
            "roc": plot_roc({h: (r.ijb["roc"]["fpr"], r.ijb["roc"]["tpr"]) for h, r in results.items()},
                            os.path.join(out, "roc_ijb_synth.png"), title="IJB-SYNTH 1:1 (all pairs)"),
            "roc_hard_hq": plot_roc({r.spec.label: s.roc("hard_hq") for r, s in zip(runs, sets)},
                                    os.path.join(out, "roc_hard_hq.png"), fars=(1e-3, 1e-2, 1e-1),
                                    title="held-out hard high-quality pairs (look-alike impostors)"),
            "training": plot_training({h: r.run.trained.history for h, r in results.items()},
                                      os.path.join(out, "training.png")),
        }

    plots = derived("plots", draw, results=results_path, warn=echo) or {}
    if plots:
        summary["plots"] = plots
        write_json(results_path, to_json(summary))
    table = derived("the table", lambda: _format_table(results), results=results_path, warn=echo) or ""
    cos = zoo.get("cosine", {})
    echo("")
    echo(table)
    echo("")
    echo(f"hard HQ: held-out set of {cfg.eval_families} families x 3 look-alikes (seed {cfg.eval_seed}), "
         f"{counts['genuine']} genuine / {counts['impostor']} look-alike impostor pairs, both images of quality >= "
         f"{HIGH_QUALITY}; [95% CI] by bootstrap over families.")
    echo("         One training seed: the intervals leave out seed-to-seed variation ('lh2face bench' measures it).")
    for m, per in diffs.items():
        for h, d in per.items():
            diff, lo, hi = (0.0 - 100 * v + 0.0 for v in (d.diff, d.ci.hi, d.ci.lo))  # first - h
            echo(f"         {first} - {h}, hard HQ TAR@FAR={m.split('@')[1]}: {diff:+.1f} points, "
                 f"95% CI [{lo:+.1f}, {hi:+.1f}] ({_FLIP.get(d.verdict, d.verdict)})")
    echo("")
    echo(f"export: {onnx_path}")
    echo(f"        onnxruntime vs torch, min cosine at batch 1 and 8: {_min_cos(report):.7f}")
    echo(f"pack:   {pack_dir} (insightface loads it as {', '.join(sorted(set(zoo.get('routed', {}).values())))}; "
         f"embedding cosine to torch {min(cos.values()) if cos else float('nan'):.7f})")
    if plots:
        echo("plots:  " + "\n        ".join(plots.values()))
    echo(f"results: {results_path}   wall time {summary['wall_seconds']:.0f} s")
    return summary


@contextlib.contextmanager
def _quiet_third_party():
    """Silence the exporter's and insightface's deprecation chatter (not errors)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.onnx._internal.exporter._registration")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _min_cos(report: Any) -> float:
    for name in ("min_cosine", "cosine"):
        value = getattr(report, name, None)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, dict) and value:
            return float(min(value.values()))
    return math.nan
