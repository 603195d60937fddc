"""The benchmark that can tell: heads trained alike, compared on held-out look-alike faces.

``lh2face bench`` (:func:`run_bench`) trains one backbone per head and training seed on the
synthetic training set (:mod:`lh2face_plugin.training`: same data, order, initialisation,
schedule; clipping that does not favour a logit scale), scores every model on a held-out
evaluation set of look-alike families (:mod:`~lh2face_plugin.bench.evalset`), and compares
heads with a paired bootstrap over families pooled over seeds
(:mod:`~lh2face_plugin.bench.bootstrap`): a difference is a *win* only when its 95% interval
excludes 0 and it exceeds the seed spread.

Modules: ``specs`` (head specs, :data:`DEFAULT_HEADS`), ``evalset`` (the held-out set),
``features`` (raw embeddings), ``scores`` (pair scores and weighted metrics), ``bootstrap``
(intervals and the win rule), ``runner`` (the job, tables, plots, ``results.json``).
"""
from .bootstrap import bootstrap_metrics, compare_heads, family_weights, percentile_ci, summarize_heads, verdict
from .evalset import EvalSet, EvalSetConfig, build_evalset, load_evalset, pair_counts
from .runner import BenchConfig, run_bench
from .scores import METRICS, PairIndex, ScoreSet
from .specs import DEFAULT_HEADS, HeadSpec, parse_head_spec, parse_head_specs

__all__ = ["BenchConfig", "run_bench", "DEFAULT_HEADS", "HeadSpec", "parse_head_spec", "parse_head_specs",
           "EvalSet", "EvalSetConfig", "build_evalset", "load_evalset", "pair_counts", "PairIndex", "ScoreSet",
           "METRICS", "bootstrap_metrics", "percentile_ci", "family_weights", "summarize_heads", "compare_heads", "verdict"]
