"""Typed records of a comparison: a trained run, its stored result, a head's summary, the comparison."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional

from .metrics import DetectableEffect, Difference, Estimate
from .specs import HeadSpec, parse_head_spec

if TYPE_CHECKING:  # torch is imported with training only
    from ..training import TrainResult

__all__ = ["Run", "RunResult", "HeadSummary", "Comparison", "result_key", "comparable_digest", "COMPARABLE_DROP"]

COMPARABLE_DROP = ("seed", "lr")
"""Training settings that may differ between runs of one table (seeds vary, a sweep picks the lr per head)."""


@dataclass
class Run:
    """One model trained for a comparison (trained now or reused).

    Attributes:
        spec: the head spec.
        seed, lr: training seed and peak learning rate.
        dir: the run folder (``model.pt``, ``train.json``, feature caches).
        name: display name (``label seed<k>``, or the label alone).
        trained: the model, its path and its ``train.json`` content.
    """

    spec: HeadSpec
    seed: int
    lr: float
    dir: str
    name: str
    trained: "TrainResult"

    @property
    def model(self):
        return self.trained.model

    @property
    def model_path(self) -> str:
        return self.trained.model_path

    @property
    def info(self) -> Dict[str, Any]:
        return self.trained.info

    @property
    def reused(self) -> bool:
        return bool(self.trained.reused)

    @property
    def seconds(self) -> float:
        return float(self.info["seconds"])

    @property
    def clip_fraction(self) -> float:
        return float(self.info["clip"]["fraction"])


def result_key(run_key: str, evalset_sha256: str) -> str:
    """Key of a run's result: the training run's key (settings, head with its resolved
    hyperparameters, input module, data digest) and the evaluation set's digest."""
    return hashlib.sha256(f"{run_key}:{evalset_sha256}".encode()).hexdigest()[:16]


@dataclass
class RunResult:
    """A run's metrics on one evaluation set, stored under :attr:`key` (``OUT/runs.json``).

    Attributes:
        key: :func:`result_key`.
        run_key: the training run's key (``train.json``).
        label, spec: the head's label and spec as written.
        head, head_kwargs, hparams: registered head, its parameters, every hyperparameter resolved.
        input_module: ``{"name", "kwargs"}`` of the input module, or ``None``.
        seed, lr: training seed, peak learning rate.
        dir, model: the run folder and its ``model.pt``, relative to the bench folder.
        model_sha256: digest of ``model.pt`` (the feature cache's key).
        network, embedding_size: the backbone.
        train: the training settings (:meth:`~lh2face_plugin.training.TrainConfig.settings`).
        data: digest of the training data; evalset: digest of the evaluation set.
        train_seconds, clip, head_state, final: from the run's ``train.json``.
        metrics: every :data:`~lh2face_plugin.bench.scores.METRICS` value on the whole set.
        summary: descriptive numbers (:meth:`~lh2face_plugin.bench.scores.ScoreSet.summary`).
        far_measured: the FAR each TAR of ``metrics`` measures on the whole set
            (:meth:`~lh2face_plugin.bench.scores.ScoreSet.far_measured`; absent from older records).
        evaluations: numbers a preset's own evaluations measured on the model (the quickstart's
            ``verify_*`` and ``ijb_*``: verify.bin and IJB-SYNTH); empty for a plain bench run.
        reused: the model was reused in the invocation that made this record (not stored).
    """

    key: str
    run_key: str
    label: str
    spec: str
    head: str
    head_kwargs: Dict[str, Any]
    hparams: Dict[str, Any]
    input_module: Optional[Dict[str, Any]]
    seed: int
    lr: float
    dir: str
    model: str
    model_sha256: str
    network: str
    embedding_size: int
    train: Dict[str, Any]
    data: str
    evalset: str
    train_seconds: float
    clip: Dict[str, Any]
    head_state: Dict[str, float]
    final: Dict[str, float]
    metrics: Dict[str, float]
    summary: Dict[str, float] = field(default_factory=dict)
    far_measured: Dict[str, float] = field(default_factory=dict)
    evaluations: Dict[str, float] = field(default_factory=dict)
    reused: bool = field(default=False, compare=False)

    @property
    def head_spec(self) -> HeadSpec:
        """The head this run trained, as it was specified (its hyperparameters resolved)."""
        module = self.input_module or {}
        return HeadSpec(self.label, self.head, dict(self.head_kwargs), self.spec, module.get("name"),
                        dict(module.get("kwargs") or {}), dict(self.hparams), network=self.own_network)

    @property
    def own_network(self) -> Optional[str]:
        """The backbone its spec names (``#NETWORK``: trained on it instead of the table's), or ``None``."""
        try:
            return parse_head_spec(self.spec).network
        except ValueError:
            return None

    def comparable(self, network: Optional[str] = None) -> str:
        """What runs of one table share: the training settings but seed and lr, the data, the evaluation set.
        A run whose spec names its own backbone counts as trained on the table's ``network`` when given."""
        train = self.train
        if network is not None and self.own_network is not None:
            train = {**train, "network": network}
        return comparable_digest(train, self.data, self.evalset)

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("reused")
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunResult":
        """A stored record, checked against :data:`_SCHEMA`; a ``ValueError`` names the first bad key
        (the caller adds the file). NaN metrics are stored as ``null``."""
        if not isinstance(d, Mapping):
            raise ValueError(f"a run record must be an object, not {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)} - {"reused"}
        missing = names - set(d) - _OPTIONAL
        if missing:
            raise ValueError(f"stored run result lacks {sorted(missing)}")
        for key, kinds in _SCHEMA.items():
            if key in _OPTIONAL and key not in d:
                continue
            v = d[key]
            if isinstance(v, bool) and bool not in kinds or not isinstance(v, kinds):
                raise ValueError(f"key {key!r} must be {' or '.join(k.__name__ for k in kinds)}, "
                                 f"not {type(v).__name__}")
        for key in ("metrics", "summary", "head_state", "final", "far_measured", "evaluations"):
            for k, v in d.get(key, {}).items():
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                    raise ValueError(f"key {key!r}: {str(k)[:40]!r} must be a number or null, not {type(v).__name__}")
        kw = {k: d[k] for k in names if k in d}
        kw["metrics"] = {k: float("nan") if v is None else float(v) for k, v in d["metrics"].items()}
        for key in ("far_measured", "evaluations"):
            kw[key] = {k: float("nan") if v is None else float(v) for k, v in d.get(key, {}).items()}
        return cls(**kw)


_SCHEMA = {
    "key": (str,), "run_key": (str,), "label": (str,), "spec": (str,), "head": (str,), "head_kwargs": (dict,),
    "hparams": (dict,), "input_module": (dict, type(None)), "seed": (int,), "lr": (int, float), "dir": (str,),
    "model": (str,), "model_sha256": (str,), "network": (str,), "embedding_size": (int,), "train": (dict,),
    "data": (str,), "evalset": (str,), "train_seconds": (int, float), "clip": (dict,), "head_state": (dict,),
    "final": (dict,), "metrics": (dict,), "summary": (dict,), "far_measured": (dict,), "evaluations": (dict,),
}
_OPTIONAL = frozenset({"far_measured", "evaluations"})
"""Keys a record written by an older bench may lack."""
"""The JSON types of a stored :class:`RunResult` (``runs.json``, ``results.json``)."""


def comparable_digest(train: Mapping[str, Any], data: str, evalset: str) -> str:
    """Digest of :meth:`RunResult.comparable` from its parts."""
    settings = {k: v for k, v in train.items() if k not in COMPARABLE_DROP}
    blob = json.dumps({"train": settings, "data": data, "evalset": evalset}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class HeadSummary:
    """One head (row) of a comparison: its runs pooled over training seeds.

    Attributes:
        label, spec, head, head_kwargs, input_module: what was trained.
        lr: peak learning rate (of its first run; a sweep picks one per head).
        seeds: its training seeds.
        metrics: metric -> its :class:`~lh2face_plugin.bench.metrics.Estimate` over the seeds.
        clip_fraction, clip_fraction_last_quarter: clipped steps, mean over seeds.
        train_accuracy, train_norm: last 20 steps' training accuracy and raw norm, mean over seeds.
        evaluations: each of its runs' :attr:`RunResult.evaluations`, mean over the seeds that measured it.
    """

    label: str
    spec: str
    head: str
    head_kwargs: Dict[str, Any]
    input_module: Optional[Dict[str, Any]]
    lr: float
    seeds: List[int]
    metrics: Dict[str, Estimate]
    clip_fraction: float
    clip_fraction_last_quarter: float
    train_accuracy: float
    train_norm: float
    evaluations: Dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        """As stored in ``results.json`` (metrics as their JSON objects)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["metrics"] = {m: e.to_dict() for m, e in self.metrics.items()}
        return d


@dataclass
class Comparison:
    """Heads compared on one evaluation set (:func:`~lh2face_plugin.bench.pipeline.compare`).

    Attributes:
        reference: label every difference is taken against.
        heads: label -> :class:`HeadSummary`, in table order.
        differences: label -> metric -> :class:`~lh2face_plugin.bench.metrics.Difference` (its ``mde``
            by :func:`~lh2face_plugin.bench.power.minimal_detectable_effect`).
        ci_half_width: metric -> medians of the achieved half-widths (``single_run_median``,
            ``head_median``, ``difference_median``).
        mde: metric -> :class:`~lh2face_plugin.bench.metrics.DetectableEffect`.
        control: label of the positive-control head, or ``None``.
        replicates, bootstrap_seed: the bootstrap.
    """

    reference: str
    heads: Dict[str, HeadSummary]
    differences: Dict[str, Dict[str, Difference]]
    ci_half_width: Dict[str, Dict[str, float]]
    mde: Dict[str, DetectableEffect]
    control: Optional[str]
    replicates: int
    bootstrap_seed: int
