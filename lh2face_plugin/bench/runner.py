"""The one comparison (:func:`run`): ``lh2face bench`` runs it as configured, ``lh2face quickstart`` with
its preset and its own :class:`Steps` (:mod:`lh2face_plugin.quickstart`). Several heads x training seeds
are trained alike and every comparable run stored in the folder is compared on the held-out look-alike
set with paired bootstrap intervals (see :mod:`lh2face_plugin.bench`); :func:`rebuild_report`
(``--report``) rebuilds the table and plots without training."""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ..fileio import derived, resolve_inside, writer_lock
from . import plots as drawing
from .config import BenchConfig
from .evalset import load_evalset, pair_counts
from .pipeline import EvalContext, TrainData, compare, prepare_data, prepare_evalset, run_result, score_results, \
    score_runs, train_run
from .records import Comparison, Run, RunResult, comparable_digest
from .report import format_report
from .results import EXTRA_BLOCKS, EXTRA_PLOTS, check_out, evalset_block, read_results, summary_dict, write_results
from .scores import PairIndex
from .specs import HeadSpec, parse_head_spec
from .store import RUNS_FILE, gather, record_results, stored_table
from .sweep import lr_sweep, sweep_dir

__all__ = ["run", "run_bench", "rebuild_report", "prepare_inputs", "Steps"]


class Steps:
    """What a preset adds to :func:`run` (the quickstart's verify.bin, IJB-SYNTH and export); the bench's own
    steps add nothing. ``command`` names the writer in the folder's lock."""

    command = "bench"

    def evaluate(self, run: Run, data: TrainData) -> Dict[str, float]:
        """Numbers measured on a model trained (or reused) now; stored as its record's ``evaluations``."""
        return {}

    def finish(self, out: str, runs: Sequence[Run]) -> Dict[str, Any]:
        """After the comparison, before ``results.json`` is written: its :data:`EXTRA_BLOCKS` (``{"export": ...}``)."""
        return {}

    def plots(self, out: str) -> Dict[str, str]:
        """Plots besides the comparison's, ``{name: path}``."""
        return {}


def _config_dict(cfg: BenchConfig) -> Dict[str, Any]:
    d = dataclasses.asdict(cfg)
    d["heads"], d["seeds"], d["lr_sweep"] = list(cfg.heads), list(cfg.seeds), list(cfg.lr_sweep)
    return d


def _counts_line(ctx: EvalContext) -> str:
    from ..data.synthetic import HIGH_QUALITY  # lazy: torch (the bench package imports without it)

    ev, c = ctx.ev, ctx.counts
    return (f"      {len(ev)} images ({int(ev.hq.sum())} HQ: quality >= {HIGH_QUALITY}; {int((~ev.hq).sum())} LQ); "
            f"pairs genuine/impostor: hard-HQ {c['hard_hq']['genuine']}/{c['hard_hq']['impostor']}, "
            f"yawed {c['yawed']['genuine']}/{c['yawed']['impostor']}, all-HQ "
            f"{c['all_hq']['genuine']}/{c['all_hq']['impostor']}, overall "
            f"{c['overall']['genuine']}/{c['overall']['impostor']}")


def _reference(cfg: BenchConfig, specs: Sequence[HeadSpec], previous: Optional[Dict[str, Any]],
               labels: Sequence[str]) -> str:
    """``--reference`` (a label, spec or folder), else the earlier table's reference, else the first head."""
    if cfg.reference is not None:
        for s in specs:
            if cfg.reference in (s.label, s.text, s.folder):
                return s.label
        if cfg.reference in labels:
            return cfg.reference
        raise ValueError(f"reference {cfg.reference!r} is not one of the heads: {', '.join(labels)}")
    if previous and previous.get("reference") in labels:
        return previous["reference"]
    return specs[0].label


def _order(previous: Optional[Dict[str, Any]], specs: Sequence[HeadSpec]) -> List[str]:
    order = list((previous or {}).get("heads") or ())
    return order + [s.label for s in specs if s.label not in order]


def _train_all(cfg: BenchConfig, specs: Sequence[HeadSpec], data, lrs: Dict[str, float], swept: bool, out: str,
               progress: bool, echo: Callable[[str], None]) -> List[Run]:
    seeds = [int(s) for s in cfg.seeds]
    n_runs = len(specs) * len(seeds)
    echo(f"[3/5] train {n_runs} runs: {len(specs)} heads x seeds {', '.join(map(str, seeds))}; {cfg.network}, "
         f"{cfg.total_steps} steps x {cfg.batch_size} images, clip {cfg.clip}")
    runs, trained_seconds, trained = [], 0.0, 0
    for spec in specs:
        for seed in seeds:
            donors = [sweep_dir(out, spec, lrs[spec.label])] if swept and seed == seeds[0] else []
            r = train_run(spec, seed, lrs[spec.label], cfg.train_config, data,
                          os.path.join(out, spec.folder, f"seed{seed}"), progress=progress, echo=echo,
                          reuse_from=donors)
            runs.append(r)
            left = n_runs - len(runs)
            if r.reused:
                echo(f"      {r.name}: reused {os.path.relpath(r.model_path, out)}")
            else:
                trained += 1
                trained_seconds += r.seconds
                eta = f"; {left} to go, about {left * trained_seconds / trained / 60:.0f} min at this pace" \
                    if left else ""
                echo(f"      {r.name}: trained in {r.seconds:.0f} s, clipped {100 * r.clip_fraction:.0f}% of the "
                     f"steps{eta}")
    return runs


def run(cfg: BenchConfig, *, progress: bool = True, echo: Callable[[str], None] = print,
        command: Optional[str] = None, wait: bool = False, steps: Optional[Steps] = None) -> Comparison:
    """The one comparison: training data -> evaluation set -> training runs (finished ones reused) -> the
    preset's evaluations -> scores -> comparison of every comparable stored run -> the preset's last steps ->
    ``cfg.out/results.json`` (:mod:`~lh2face_plugin.bench.results`), then plots and the printed table
    (:func:`~lh2face_plugin.bench.report.format_report`).

    One writer per folder (:func:`~lh2face_plugin.fileio.writer_lock`): while another bench or quickstart
    writes ``cfg.out`` this raises ``FolderBusy`` at once, or with ``wait`` waits for it.

    Args:
        steps: a preset's own steps (the quickstart's), or ``None``: the bench's (none).
    Returns:
        the comparison, also written to ``results.json``.
    """
    steps = steps or Steps()
    specs, notes = cfg.validate()
    with writer_lock(os.path.abspath(cfg.out), steps.command, wait=wait, on_wait=echo):
        return _run(cfg, specs, notes, steps, progress, echo, command)


run_bench = run
"""``lh2face bench``'s entry point: :func:`run` with the bench's own steps."""


def prepare_inputs(cfg: BenchConfig, out: str, progress: bool = True,
                   echo: Callable[[str], None] = lambda _: None) -> Tuple[TrainData, EvalContext]:
    """The training set ``out/data`` and the evaluation set ``out/evalset`` of ``cfg``, made (or reused) as every
    bench into ``out`` makes them (``benchmarks/pinned_data.py`` makes them ahead, under pinned kernels)."""
    echo(f"[1/5] training data: {cfg.identities} identities x {cfg.images_per_id} images (data seed {cfg.data_seed})")
    data = prepare_data(os.path.join(out, "data"), cfg.identities, cfg.images_per_id, cfg.data_seed, progress,
                        **cfg.data_kwargs())
    ctx = prepare_evalset(os.path.join(out, "evalset"), cfg.families, cfg.eval_seed, progress)
    c = ctx.ev.config
    echo(f"[2/5] evaluation set: {cfg.families} families x 3 look-alike identities x "
         f"({c.hq_per_id} HQ + {c.lq_per_id} LQ) images (seed {cfg.eval_seed})")
    echo(_counts_line(ctx))
    return data, ctx


def _run(cfg: BenchConfig, specs: List[HeadSpec], notes: List[str], steps: Steps, progress: bool,
         echo: Callable[[str], None], command: Optional[str]) -> Comparison:
    t0 = time.perf_counter()
    out = os.path.abspath(cfg.out)
    os.makedirs(out, exist_ok=True)
    check_out(out)
    previous = read_results(out)
    for note in notes:
        echo(f"note: {note}")
    data, ctx = prepare_inputs(cfg, out, progress, echo)
    comparable = comparable_digest(cfg.train_config(cfg.lr, cfg.seeds[0]).settings(), data.key, ctx.sha256)
    stored = {r.label for r in gather(out, comparable, network=cfg.network)[0]}
    reference = _reference(cfg, specs, previous, [s.label for s in specs] + sorted(stored - {s.label for s in specs}))

    sweep = None
    lrs = {s.label: float(cfg.lr) for s in specs}
    if cfg.lr_sweep:
        sweep = lr_sweep(cfg, specs, data, progress, echo)
        lrs = {label: float(v["chosen"]) for label, v in sweep["heads"].items()}
    runs = _train_all(cfg, specs, data, lrs, bool(sweep), out, progress, echo)
    evaluations = [steps.evaluate(r, data) for r in runs]

    sets = score_runs(runs, ctx, device=cfg.device, progress=progress)
    fresh = [run_result(r, s, data, ctx, out, e) for r, s, e in zip(runs, sets, evaluations)]
    control = parse_head_spec(cfg.control).label if cfg.control else (previous or {}).get("control")
    if previous and previous.get("comparable") == comparable and not sweep:
        sweep = previous.get("lr_sweep")
    train_data = {"path": os.path.relpath(data.dir, out), "fingerprint": data.key, "seed": cfg.data_seed,
                  "identities": cfg.identities, "images_per_id": cfg.images_per_id}
    # runs.json alone rebuilds the table (bench --report) should anything after this line fail
    record_results(out, fresh, table={"comparable": comparable, "evalset": {"path": os.path.relpath(ctx.ev.path, out)},
                                      "reference": reference, "control": control, "heads": _order(previous, specs),
                                      "bootstrap": {"replicates": cfg.bootstrap, "seed": cfg.bootstrap_seed},
                                      "config": _config_dict(cfg), "command": command, "lr_sweep": sweep,
                                      "train_data": train_data})
    results, gather_notes = gather(out, comparable, _order(previous, specs), network=cfg.network)
    earlier = [r for r in results if r.key not in {f.key for f in fresh}]
    echo(f"[4/5] evaluate {len(runs)} models on the evaluation set"
         + (f", with {len(earlier)} comparable runs stored earlier" if earlier else "")
         + f"; bootstrap over families ({cfg.bootstrap} replicates)")
    by_key = {f.key: s for f, s in zip(fresh, sets)}
    scores = [by_key.get(r.key) or score_results([r], out, ctx, device=cfg.device, progress=progress)[0]
              for r in results]
    comparison = compare(results, scores, ctx.ev.num_families, reference=reference, replicates=cfg.bootstrap,
                         bootstrap_seed=cfg.bootstrap_seed, control=control, progress=progress)
    extra = steps.finish(out, runs)
    _finish(out, results, scores, comparison, ctx, comparable=comparable, config=_config_dict(cfg),
            command=command, sweep=sweep, notes=gather_notes, reused={f.key: f.reused for f in fresh},
            train_data=train_data, extra=extra, more_plots=lambda: steps.plots(out), t0=t0, echo=echo)
    return comparison


def rebuild_report(out: str, *, reference: Optional[str] = None, device: str = "cpu", progress: bool = True,
                   echo: Callable[[str], None] = print, wait: bool = False) -> Comparison:
    """Rebuild ``results.json``, the table and the plots of ``out`` (a bench's or a quickstart's folder) from
    its stored runs and their cached features (or saved models), without training; the evaluation set, the
    comparability, the reference, the control and the bootstrap settings are those of the folder's
    ``results.json``, else of the ``"table"`` block ``runs.json`` keeps (so ``runs.json`` alone rebuilds
    them); its :data:`~lh2face_plugin.bench.results.EXTRA_BLOCKS` are kept. One writer per folder, as in
    :func:`run`. Returns the comparison."""
    with writer_lock(os.path.abspath(out), "bench", wait=wait, on_wait=echo):
        return _rebuild_report(os.path.abspath(out), reference, device, progress, echo)


def _check_table(doc: Dict[str, Any], source: str) -> None:
    """The keys ``bench --report`` reads from a stored table have their JSON types (one-line error
    naming ``source`` and the key)."""
    def bad(key: str, want: str) -> ValueError:
        return ValueError(f"{source}: key {key!r} must be {want}")

    for key in ("comparable", "reference"):
        if not isinstance(doc.get(key), str):
            raise bad(key, "a string")
    if not isinstance(doc.get("evalset"), dict) or not isinstance(doc["evalset"].get("path"), str):
        raise bad("evalset.path", "a string")
    boot = doc.get("bootstrap")
    if not isinstance(boot, dict):
        raise bad("bootstrap", "an object")
    for key in ("replicates", "seed"):
        v = boot.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < (1 if key == "replicates" else 0):
            raise bad(f"bootstrap.{key}", "an integer >= 1" if key == "replicates" else "an integer >= 0")
    heads = doc.get("heads")
    if heads is not None and not (isinstance(heads, (list, dict)) and all(isinstance(h, str) for h in heads)):
        raise bad("heads", "a list (or an object) of labels")
    if doc.get("control") is not None and not isinstance(doc["control"], str):
        raise bad("control", "a label or null")


def _rebuild_report(out: str, reference: Optional[str], device: str, progress: bool,
                    echo: Callable[[str], None]) -> Comparison:
    t0 = time.perf_counter()
    previous, source = read_results(out), os.path.join(out, "results.json")
    if previous is None:
        previous, source = stored_table(out), os.path.join(out, RUNS_FILE)
    if previous is not None and previous.get("comparable"):
        _check_table(previous, source)
    if previous is None:
        if not os.path.exists(os.path.join(out, RUNS_FILE)):
            raise FileNotFoundError(f"{out}: no {RUNS_FILE} of lh2face bench to rebuild the report from")
        raise ValueError(f"{os.path.join(out, RUNS_FILE)} was written by an older lh2face bench (no \"table\" "
                         "block); rerun lh2face bench into this folder once")
    if not previous.get("comparable"):
        raise ValueError(f"{out}/results.json was written by an older lh2face bench (no stored run keys); "
                         "rerun lh2face bench into this folder once")
    ev = load_evalset(resolve_inside(out, previous["evalset"]["path"], source=f"{source} key 'evalset.path'"))
    ctx = EvalContext(ev, PairIndex.build(ev), pair_counts(ev))
    network = (previous.get("config") or {}).get("network")
    results, notes = gather(out, previous["comparable"], list(previous.get("heads") or ()),
                            network=network if isinstance(network, str) else None)
    if not results:
        raise FileNotFoundError(f"{out}: no stored run of the table's settings holds its model any more")
    labels = list(dict.fromkeys(r.label for r in results))
    reference = reference or previous["reference"]
    if reference not in labels:
        raise ValueError(f"reference {reference!r} is not one of the heads: {', '.join(labels)}")
    echo(f"rebuilding the report of {out}: {len(results)} stored runs of {len(labels)} heads, no training")
    scores = score_results(results, out, ctx, device=device, progress=progress)
    boot = previous["bootstrap"]
    comparison = compare(results, scores, ev.num_families, reference=reference, replicates=int(boot["replicates"]),
                         bootstrap_seed=int(boot["seed"]), control=previous.get("control"), progress=progress)
    _finish(out, results, scores, comparison, ctx, comparable=previous["comparable"], config=previous.get("config"),
            command=previous.get("command"), sweep=previous.get("lr_sweep"), notes=notes, reused={},
            train_data=previous.get("train_data"), extra={k: previous[k] for k in EXTRA_BLOCKS if k in previous},
            more_plots=lambda: _kept_plots(previous, out), t0=t0, echo=echo)
    return comparison


def _kept_plots(previous: Mapping[str, Any], out: str) -> Dict[str, str]:
    """The earlier :data:`~lh2face_plugin.bench.results.EXTRA_PLOTS` whose files are still in ``out``."""
    plots = previous.get("plots")
    if not isinstance(plots, dict):
        return {}
    return {k: p for k, p in plots.items() if k in EXTRA_PLOTS and isinstance(p, str)
            and os.path.dirname(os.path.abspath(p)) == out and os.path.isfile(p)}


def _finish(out: str, results: Sequence[RunResult], scores: Sequence[Any], comparison: Comparison,
            ctx: EvalContext, *, comparable: str, config, command, sweep, notes: List[str], reused: Dict[str, bool],
            train_data, extra: Mapping[str, Any], t0: float, echo: Callable[[str], None],
            more_plots: Callable[[], Dict[str, str]] = dict) -> None:
    """Write ``results.json`` (the measured results first), then the plots (the comparison's and
    ``more_plots()``) and the printed table, each derived from it."""
    echo("[5/5] results")
    kwargs = dict(evalset=evalset_block(ctx, out), train_data=train_data, comparable=comparable, config=config,
                  command=command, lr_sweep=sweep, notes=notes, reused=reused, extra=extra)
    summary = summary_dict(out, comparison, results, plots={}, wall_seconds=time.perf_counter() - t0, **kwargs)
    path = write_results(out, summary)
    plots = derived("plots", lambda: {**drawing.plot_comparison(out, results, scores, comparison, sweep),
                                      **more_plots()}, results=path, warn=echo) or {}
    if plots:
        summary = summary_dict(out, comparison, results, plots=plots, wall_seconds=time.perf_counter() - t0,
                               **kwargs)
        write_results(out, summary)
    echo("")
    for note in notes:
        echo(f"note: {note}")
    lines = derived("the table", lambda: format_report(comparison, ctx, sweep), results=path, warn=echo) or []
    for line in lines:
        echo(line)
    echo("")
    echo(f"results: {path}")
    if plots:
        echo("plots:   " + "\n         ".join(plots.values()))
    echo(f"models:  {out}/<head>/seed<k>/model.pt; e.g. {summary['reevaluate']}")
    echo(f"wall time {summary['wall_seconds']:.0f} s")
