"""The benchmark that can tell: heads trained alike, compared on held-out look-alike faces.

``lh2face bench`` (:func:`run`, the one comparison; ``lh2face quickstart`` is a preset of it) trains
one backbone per head and training seed on the synthetic training set (:mod:`lh2face_plugin.training`:
same data, order, initialisation, schedule; clipping that does not favour a logit scale), scores every
model on a held-out evaluation set of look-alike families (:mod:`~lh2face_plugin.bench.evalset`), and
compares heads with a paired bootstrap over families pooled over seeds
(:mod:`~lh2face_plugin.bench.bootstrap`): a difference is a *win* only when its 95% interval
excludes 0 and it exceeds the seed spread. Every run's result is stored under its key and the
table gathers every comparable run of the folder (:mod:`~lh2face_plugin.bench.store`); a
positive control (``--control``) and the minimal detectable effect
(:mod:`~lh2face_plugin.bench.power`) say what the run could have seen.

Modules: ``specs`` (head specs, :data:`DEFAULT_HEADS`, :data:`CONTROL_HEAD`), ``config``
(:class:`BenchConfig`), ``evalset`` (the held-out set), ``features`` (raw embeddings), ``scores``
(pair scores and weighted metrics), ``bootstrap`` (intervals and the win rule), ``power`` (minimal
detectable effect), ``records`` (typed runs, results, summaries), ``pipeline`` (the steps: data,
evaluation set, runs, scores, comparison), ``store`` (``runs.json``), ``sweep`` (learning-rate sweep),
``results`` (``results.json``, one versioned schema), ``report`` (the printed tables), ``plots`` (PNGs),
``runner`` (:func:`run`, its :class:`Steps`, :func:`rebuild_report`).
"""
from .bootstrap import bootstrap_metrics, compare_heads, family_weights, percentile_ci, summarize_heads, verdict
from .config import BenchConfig
from .evalset import EvalSet, EvalSetConfig, build_evalset, load_evalset, pair_counts
from .power import detectable_effect, minimal_detectable_effect
from .records import Comparison, HeadSummary, Run, RunResult
from .runner import Steps, rebuild_report, run, run_bench
from .scores import METRICS, PairIndex, ScoreSet
from .specs import CONTROL_HEAD, DEFAULT_HEADS, HeadSpec, parse_head_spec, parse_head_specs

__all__ = ["BenchConfig", "run", "run_bench", "Steps", "rebuild_report", "DEFAULT_HEADS", "CONTROL_HEAD", "HeadSpec",
           "parse_head_spec", "parse_head_specs", "EvalSet", "EvalSetConfig", "build_evalset", "load_evalset",
           "pair_counts", "PairIndex", "ScoreSet", "METRICS", "bootstrap_metrics", "percentile_ci", "family_weights",
           "summarize_heads", "compare_heads", "verdict", "minimal_detectable_effect", "detectable_effect", "Run",
           "RunResult", "HeadSummary", "Comparison"]
