"""The main job of the README's first command: synthetic data -> three heads trained -> evaluated -> exported.

``lh2face quickstart`` is ``lh2face bench``'s one comparison (:func:`lh2face_plugin.bench.runner.run`) at a
small preset (:data:`QUICKSTART`, :func:`quickstart_config`) with three steps of its own
(:class:`QuickstartSteps`). On CPU in minutes:

1. the embedded synthetic dataset, with its verification sets at full size;
2. the same backbone trained with the ``lh2face`` head, an ``arcface`` baseline and a
   scale-matched ``cosface`` (s=24, LH2Face's mean kappa; METHODS.md section 6), through
   :mod:`lh2face_plugin.training` (same data, order, initialisation and schedule; one
   training seed, separate from the data's);
3. each model evaluated on the synthetic verification ``.bin`` (10-fold accuracy) and the
   IJB-style template set (TAR@FAR): the quickstart's own step;
4. every model scored on the held-out look-alike set (:mod:`lh2face_plugin.bench.evalset`) with
   95% bootstrap intervals over families and paired differences to the first head;
5. the first head's model exported to ONNX, packed for insightface's model zoo, loaded back
   through insightface and its embedding compared with torch's: the quickstart's own step;
6. ``results.json`` (the bench's schema, :mod:`lh2face_plugin.bench.results`), the bench's table and
   PNG plots.

One training seed cannot rank heads; ``lh2face bench`` can (seeds, paired intervals). Every stage
writes its outputs atomically and a rerun with the same settings reuses them (data, evaluation
set, trained models, cached features, the pack).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import warnings
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .bench.config import BenchConfig
from .bench.pipeline import TrainData
from .bench.records import Comparison, Run
from .bench.runner import Steps, run
from .data.synthetic import IJB_TARGET
from .eval import evaluate_ijb, evaluate_verification, torch_embedder
from .eval.plots import plot_roc
from .export.modelzoo import pack_model_zoo, verify_pack
from .export.onnx import export_onnx
from .fileio import sha256_file
from .headspec import preset

__all__ = ["QUICKSTART", "DEFAULT_QUICKSTART_HEADS", "quickstart_config", "QuickstartSteps", "run_quickstart",
           "evaluation_numbers"]

DEFAULT_QUICKSTART_HEADS = ("lh2face", "arcface", preset("cosface-s24"))
"""LH2Face (exported), ArcFace at arcface_torch's defaults, CosFace at LH2Face's logit scale."""

QUICKSTART: Dict[str, Any] = dict(out="lh2face_runs/quickstart", heads=DEFAULT_QUICKSTART_HEADS, seeds=(0,),
                                  network="compact-tiny", steps=200, batch_size=64, identities=200, families=40,
                                  verification=True)
"""The quickstart's preset of :class:`~lh2face_plugin.bench.config.BenchConfig`; every other setting is the
bench's default (20 images per identity, data seed 0, evaluation seed 1, lr 0.1, scaled clipping, 1000
bootstrap replicates)."""


def quickstart_config(**settings: Any) -> BenchConfig:
    """:data:`QUICKSTART` with ``settings`` over it (one given as ``None`` keeps the preset's). The first head
    is the reference unless ``reference`` names another; the first head's first run is the one exported."""
    merged = {**QUICKSTART, **{k: v for k, v in settings.items() if v is not None}}
    merged["heads"] = tuple(merged["heads"])
    if merged.get("reference") is None and merged["heads"]:
        merged["reference"] = merged["heads"][0]
    return BenchConfig(**merged)


def _far_name(far: float) -> str:
    """``1e-3`` for 0.001, as in the bench's metric names."""
    return f"{far:.0e}".replace("e-0", "e-")


def _number(v: Any) -> float:
    return math.nan if v is None else float(v)


def evaluation_numbers(verify: Mapping[str, Any], ijb: Mapping[str, Any]) -> Dict[str, float]:
    """A model's verify.bin and IJB-SYNTH results as the flat numbers a run record stores
    (:attr:`~lh2face_plugin.bench.records.RunResult.evaluations`): ``verify_accuracy``, ``verify_accuracy_std``,
    ``verify_xnorm``, ``verify_auc``, ``ijb_tar@F`` and ``ijb_far@F`` (the FAR measured) for each FAR ``F``,
    ``ijb_auc``, ``ijb_pairs``, ``ijb_duplicate_pairs``, ``ijb_templates``; NaN where a FAR is not resolvable."""
    numbers = {f"verify_{k}": _number(verify[k]) for k in ("accuracy", "accuracy_std", "xnorm", "auc")}
    for far, tar in ijb["tar_at_far"].items():
        numbers[f"ijb_tar@{_far_name(float(far))}"] = _number(tar)
        numbers[f"ijb_far@{_far_name(float(far))}"] = _number(ijb.get("far_measured", {}).get(far))
    numbers.update({f"ijb_{k}": _number(ijb.get(k)) for k in ("auc", "pairs", "duplicate_pairs", "templates")})
    return numbers


class QuickstartSteps(Steps):
    """The quickstart's own steps in :func:`~lh2face_plugin.bench.runner.run`: every model on the training
    data's verify.bin and IJB-SYNTH; the first run exported to ONNX and packed for insightface's model zoo;
    the IJB-SYNTH ROC plot."""

    command = "quickstart"

    def __init__(self, device: str = "cpu", echo: Callable[[str], None] = print):
        self.device, self.echo = device, echo
        self.roc: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
        self.export: Dict[str, Any] = {}

    def evaluate(self, run: Run, data: TrainData) -> Dict[str, float]:
        embed = torch_embedder(run.model, device=self.device)
        key = sha256_file(run.model_path)[:16]
        cache = os.path.join(run.dir, "features")
        verify = evaluate_verification(embed, data.paths["verify_bin"], cache_dir=os.path.join(cache, "verify"),
                                       cache_key=key)
        ijb = evaluate_ijb(embed, data.paths["ijb"], IJB_TARGET, cache_dir=os.path.join(cache, "ijb"),
                           cache_key=key, identification=False)
        self.roc[run.name] = (ijb["roc"]["fpr"], ijb["roc"]["tpr"])
        self.echo(f"      {run.name}: evaluated on verify.bin and IJB-SYNTH")
        return evaluation_numbers(verify, ijb)

    def finish(self, out: str, runs: Sequence[Run]) -> Dict[str, Any]:
        first = runs[0]
        onnx_path = os.path.join(first.dir, "recognition.onnx")
        pack_dir = os.path.join(out, f"pack_{first.spec.folder}")
        self.echo(f"      export {first.name} to ONNX and an insightface model-zoo pack")
        with _quiet_third_party():
            report = export_onnx(first.model, onnx_path)
            pack_model_zoo(onnx_path, pack_dir, model_id=f"{first.spec.folder}-quickstart")
            zoo = verify_pack(pack_dir, reference=first.model)
        parity = dataclasses.asdict(report) if dataclasses.is_dataclass(report) else str(report)
        self.export = {"run": first.name, "onnx": onnx_path, "parity": parity, "min_cosine": _min_cos(report),
                       "pack": pack_dir, "insightface": zoo}
        return {"export": self.export}

    def plots(self, out: str) -> Dict[str, str]:
        return {"roc_ijb_synth": plot_roc(self.roc, os.path.join(out, "roc_ijb_synth.png"),
                                          title="IJB-SYNTH 1:1 (all pairs)")}

    def export_lines(self) -> List[str]:
        """What the export and the pack printed: paths and cosines to torch."""
        e = self.export
        if not e:
            return []
        cos = e["insightface"].get("cosine", {})
        routed = ", ".join(sorted(set(e["insightface"].get("routed", {}).values())))
        return [f"export: {e['onnx']}",
                f"        onnxruntime vs torch, min cosine at batch 1 and 8: {e['min_cosine']:.7f}",
                f"pack:   {e['pack']} (insightface loads it as {routed}; embedding cosine to torch "
                f"{min(cos.values()) if cos else float('nan'):.7f})"]


def run_quickstart(cfg: BenchConfig, progress: bool = True, echo: Callable[[str], None] = print,
                   command: Optional[str] = None) -> Comparison:
    """Run the quickstart: the bench's one comparison with :class:`QuickstartSteps`, then the export's lines.

    Args:
        cfg: :func:`quickstart_config`, or any config with ``verification`` (the full verification sets).
    Returns:
        the comparison (``cfg.out/results.json`` holds it with every run's evaluations and the export).
    """
    if not cfg.verification:
        raise ValueError("verification must be True for the quickstart (its verify.bin and IJB-SYNTH evaluations "
                         "need the full sets); build the config with quickstart_config")
    steps = QuickstartSteps(cfg.device, echo)
    comparison = run(cfg, progress=progress, echo=echo, command=command, steps=steps)
    for line in steps.export_lines():
        echo(line)
    return comparison


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
