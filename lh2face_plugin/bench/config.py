"""Settings of ``lh2face bench`` (:class:`BenchConfig`)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from .scores import METRICS
from .specs import DEFAULT_HEADS, HeadSpec, parse_head_spec, parse_head_specs

__all__ = ["BenchConfig", "SCALES"]

SCALES: Dict[str, Dict[str, Any]] = {
    "toy": dict(network="compact-tiny", steps=500, batch_size=64, identities=200),
    "cpu": dict(network="compact-tiny", steps=1500, batch_size=64, identities=600),
    "gpu": dict(network="compact", steps=3000, batch_size=128, identities=2400),
}
"""Named settings of ``lh2face bench --scale``. Each sees its training set about 8 times (steps x batch /
(identities x 20 images)), so data grows with the steps. ``toy`` (the default): about 15 minutes for the
default comparison on 2 CPU cores, the reference at hard-HQ TAR@1e-2 about 7%; ``cpu``: about 53 minutes
with ``--control``, the reference at 13.9% (docs/results/recorded-bench.md, "A scale at which heads can
differ"); ``gpu``: for ``--device cuda`` (``benchmarks/gpu.sh``), not yet measured. ``--budget`` multiplies
the steps of any of them."""


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
        control: a positive-control head spec added to ``heads`` (``--control``:
            :data:`~lh2face_plugin.bench.specs.CONTROL_HEAD`), or ``None``.
        verification: the training data's own verification sets (``verify.bin``, IJB-SYNTH) at full size,
            for the quickstart's evaluations; ``False`` keeps them tiny (:meth:`data_kwargs`).
    """

    out: str = "lh2face_runs/bench"
    heads: Sequence[str] = DEFAULT_HEADS
    reference: Optional[str] = None
    seeds: Sequence[int] = (0, 1)
    budget: float = 1.0
    steps: int = SCALES["toy"]["steps"]
    batch_size: int = SCALES["toy"]["batch_size"]
    network: str = SCALES["toy"]["network"]
    embedding_size: int = 512
    lr: float = 0.1
    clip: Union[str, float] = "scaled"
    lr_sweep: Sequence[float] = ()
    sweep_metric: str = "hard_hq_tar@1e-1"
    identities: int = SCALES["toy"]["identities"]
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
    control: Optional[str] = None
    verification: bool = False

    @classmethod
    def at_scale(cls, scale: str = "toy", **settings: Any) -> "BenchConfig":
        """A config with the :data:`SCALES` entry ``scale``'s network, steps, batch size and identities;
        ``settings`` given as ``None`` take the scale's value, others override it."""
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
        preset = SCALES[scale]
        merged = {k: v for k, v in settings.items() if v is not None or k not in preset}
        return cls(**{**preset, **merged})

    @property
    def total_steps(self) -> int:
        return max(1, int(round(self.steps * self.budget)))

    def data_kwargs(self) -> Dict[str, int]:
        """Arguments of :func:`~lh2face_plugin.data.synthetic.generate_dataset` besides the training set's:
        none with :attr:`verification` (its defaults), else the smallest verification sets and no renderer set."""
        return {} if self.verification else dict(eval_identities=8, verify_pairs=20, render_eval=0)

    def train_config(self, lr: float, seed: int):
        from ..training import TrainConfig  # lazy: torch (the bench package imports without it)

        return TrainConfig(network=self.network, embedding_size=self.embedding_size, steps=self.total_steps,
                           batch_size=self.batch_size, lr=lr, clip=self.clip, seed=int(seed), device=self.device,
                           workers=self.workers)

    def validate(self) -> Tuple[List[HeadSpec], List[str]]:
        """Check every setting; returns the head specs (each parsed and built once) and notes."""
        if not (isinstance(self.budget, (int, float)) and math.isfinite(self.budget) and self.budget > 0):
            raise ValueError(f"budget must be a number > 0, got {self.budget!r}")
        for key in ("steps", "identities", "images_per_id", "families", "bootstrap"):
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
        return self.head_specs()

    def head_specs(self) -> Tuple[List[HeadSpec], List[str]]:
        """Parsed head specs, and notes on default heads left out (not registered here)."""
        notes: List[str] = []
        texts = list(self.heads)
        if self.control is not None:
            control = parse_head_spec(self.control)
            if control.label not in {parse_head_spec(t).label for t in texts}:
                texts.append(self.control)
        specs = parse_head_specs(texts, skip_unregistered=tuple(self.heads) == DEFAULT_HEADS, notes=notes)
        return specs, notes
