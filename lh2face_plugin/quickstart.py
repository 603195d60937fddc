"""The README's main job: synthetic data -> two heads trained -> evaluated -> exported.

``lh2face quickstart`` runs, on CPU in minutes:

1. the embedded synthetic dataset (:func:`lh2face_plugin.data.synthetic.generate_dataset`);
2. the same backbone trained with the ``lh2face`` head and with an ``arcface``
   baseline, same seed, data order and budget, through the single-process
   classifier (the head code Partial FC calls in multi-GPU training);
3. both evaluated on the synthetic verification ``.bin`` (10-fold accuracy) and the
   IJB-style template set (TAR@FAR), overall and on the hard high-quality split;
4. the lh2face model exported to ONNX, packed for insightface's model zoo, loaded
   back through insightface and its embedding compared with torch's;
5. a comparison table, ``results.json`` and PNG plots.

Every stage writes its outputs atomically and a rerun with the same settings reuses
them (data, trained models, cached features, the pack).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Sequence

import numpy as np
import torch

from .fileio import sha256_file

__all__ = ["QuickstartConfig", "run_quickstart", "train_head", "hard_hq_metrics"]

DEFAULT_HEAD_KWARGS: Dict[str, Dict[str, Any]] = {"lh2face": {}, "arcface": {}}


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
        heads: the heads to compare; the first one is exported.
        head_kwargs: parameters per head (defaults of each head otherwise).
        device: ``cpu`` or ``cuda``.
        seed: one seed for data, initialisation and data order.
        workers: DataLoader worker processes.
    """

    out: str = "lh2face_runs/quickstart"
    identities: int = 200
    images_per_id: int = 20
    steps: int = 300
    batch_size: int = 64
    network: str = "compact-tiny"
    embedding_size: int = 512
    lr: float = 0.1
    heads: Sequence[str] = ("lh2face", "arcface")
    head_kwargs: Dict[str, Dict[str, Any]] = field(default_factory=lambda: dict(DEFAULT_HEAD_KWARGS))
    device: str = "cpu"
    seed: int = 0
    workers: int = 1

    def validate(self) -> None:
        for key in ("identities", "images_per_id", "steps", "batch_size", "embedding_size"):
            value = getattr(self, key)
            if int(value) != value or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if self.identities < 2:
            raise ValueError(f"identities must be >= 2, got {self.identities}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not self.heads:
            raise ValueError("heads must name at least one head")
        from . import available_heads
        from .backbones import available_backbones

        for h in self.heads:
            if h not in available_heads():
                raise ValueError(f"heads: unknown head {h!r}; known: {', '.join(available_heads())}")
        if self.network not in available_backbones():
            raise ValueError(f"network must be one of {available_backbones()}, got {self.network!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r} but CUDA is not available")


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _write_json(path: str, obj: Any) -> None:
    from .fileio import write_json
    from .eval.report import jsonable

    write_json(path, jsonable(obj))


def _lr_lambda(steps: int) -> Callable[[int], float]:
    warmup = max(1, int(0.05 * steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, 1.0 - (step - warmup) / max(1, steps - warmup)) ** 2

    return factor


def train_head(cfg: QuickstartConfig, data_dir: str, head: str, out_dir: str, progress: bool = True) -> Dict[str, Any]:
    """Train ``cfg.network`` with ``head`` on the RecordIO set in ``data_dir``.

    Reuses ``out_dir/model.pt`` when ``out_dir/train.json`` records the same settings.

    Returns:
        dict with ``model`` (the backbone, eval mode), ``model_path``, ``history``
        (per-step loss and training accuracy), ``seconds``, ``reused``.
    """
    from tqdm.auto import tqdm

    from .backbones import build_backbone
    from .classifier import NormalizedClassifier
    from .data.dataset import FaceRecordDataset
    from .fileio import atomic_path

    os.makedirs(out_dir, exist_ok=True)
    model_path = os.path.join(out_dir, "model.pt")
    info_path = os.path.join(out_dir, "train.json")
    kwargs = dict(cfg.head_kwargs.get(head, {}))
    settings = {k: getattr(cfg, k) for k in ("steps", "batch_size", "network", "embedding_size", "lr", "seed")}
    settings.update(head=head, head_kwargs=kwargs, data=_data_fingerprint(data_dir))
    key = _fingerprint(settings)
    torch.manual_seed(cfg.seed)
    backbone = build_backbone(cfg.network, embedding_size=cfg.embedding_size)
    if os.path.exists(model_path) and os.path.exists(info_path):
        info = _read_json_or_none(info_path)
        if info and info.get("key") == key and info.get("model_sha256") == sha256_file(model_path):
            backbone.load_state_dict(torch.load(model_path, map_location="cpu", weights_only=True))
            return {"model": backbone.eval(), "model_path": model_path, "history": info["history"],
                    "seconds": info["seconds"], "reused": True}

    device = torch.device(cfg.device)
    dataset = FaceRecordDataset(data_dir, random_flip=True)
    num_classes = int(dataset.num_classes) if hasattr(dataset, "num_classes") else _num_classes(data_dir)
    clf = NormalizedClassifier(head, cfg.embedding_size, num_classes, head_kwargs=kwargs)
    backbone.to(device).train()
    clf.to(device).train()
    params = list(backbone.parameters()) + list(clf.parameters())
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.steps))
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                         num_workers=cfg.workers, generator=gen,
                                         persistent_workers=cfg.workers > 0)
    history: Dict[str, List[float]] = {"loss": [], "accuracy": []}
    start = time.perf_counter()
    bar = tqdm(total=cfg.steps, desc=f"train {head}", disable=not progress, unit="step")
    step = 0
    while step < cfg.steps:
        for images, labels in loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            loss = clf(backbone(images), labels)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{head}: non-finite loss at step {step}; lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(backbone.parameters(), 5.0)
            opt.step()
            sched.step()
            history["loss"].append(loss.item())
            history["accuracy"].append(float(clf.last["accuracy"]))
            step += 1
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{np.mean(history['loss'][-10:]):.3f}",
                                acc=f"{np.mean(history['accuracy'][-10:]):.2f}")
            if step >= cfg.steps:
                break
    bar.close()
    seconds = time.perf_counter() - start
    backbone.cpu().eval()
    with atomic_path(model_path) as tmp:
        torch.save(backbone.state_dict(), tmp)
    _write_json(info_path, {"key": key, "settings": settings, "history": history, "seconds": seconds,
                            "model_sha256": sha256_file(model_path)})
    return {"model": backbone, "model_path": model_path, "history": history, "seconds": seconds, "reused": False}


def _data_fingerprint(data_dir: str) -> str:
    """The dataset's content: its manifest lists every file's SHA-256."""
    from .fileio import MANIFEST

    return sha256_file(os.path.join(data_dir, MANIFEST))[:16]


def _read_json_or_none(path: str) -> Any:
    """A JSON cache record, or ``None`` when it is unreadable (the cache is then rebuilt)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _num_classes(data_dir: str) -> int:
    with open(os.path.join(data_dir, "property")) as fh:
        return int(fh.read().split(",")[0])


def hard_hq_metrics(verify: Dict[str, Any], verify_pairs: str, ijb: Dict[str, Any], ijb_splits: str) -> Dict[str, Any]:
    """Metrics on the hard, high-quality pairs of the synthetic sets.

    Verification: 10-fold accuracy of arcface_torch's procedure restricted to the
    pairs marked hard with both images of high quality. IJB: ROC of the template
    pairs marked hard whose two templates both have at least the median template
    quality of the set (templates mix qualities, so an absolute threshold leaves
    almost no pair), TAR at FAR 1e-2 and 1e-1, AUC.
    """
    from .eval import metrics
    from .eval.verification import verification_metrics

    with open(verify_pairs) as fh:
        pairs = json.load(fh)["pairs"]
    sel = np.array([i for i, p in enumerate(pairs) if p["hard"] and p["quality"] == "high"], dtype=int)
    feats = np.asarray(verify["features"])
    issame = np.array([bool(p["same"]) for p in pairs])
    rows = np.stack([2 * sel, 2 * sel + 1], 1).reshape(-1)
    folds = int(min(10, max(2, len(sel) // 4)))
    vm = verification_metrics(feats[rows], issame[sel], folds=folds, fars=())

    with open(ijb_splits) as fh:
        splits = json.load(fh)
    split = np.asarray(splits["pairs"])
    quality = {int(t): v["quality"] for t, v in splits["templates"].items()}
    median = float(np.median(list(quality.values())))
    high = np.array([quality[int(a)] >= median and quality[int(b)] >= median for a, b in split[:, :2]])
    mask = (split[:, 3] == 1) & high
    scores, labels = np.asarray(ijb["scores"])[mask], np.asarray(ijb["labels"])[mask].astype(int)
    out = {"verify_pairs": int(len(sel)), "verify_accuracy": vm["accuracy"],
           "ijb_pairs": int(mask.sum()), "ijb_genuine": int(labels.sum()),
           "ijb_tar_at_far": {1e-2: math.nan, 1e-1: math.nan}, "ijb_auc": math.nan,
           "ijb_roc": {"fpr": np.zeros(0), "tpr": np.zeros(0)}}
    if 0 < labels.sum() < len(labels):  # a ROC needs both genuine and impostor pairs
        fpr, tpr, _ = metrics.roc_curve(labels, scores)
        out.update(ijb_tar_at_far=metrics.tar_at_far_nearest(fpr, tpr, (1e-2, 1e-1)), ijb_auc=metrics.auc(fpr, tpr),
                   ijb_roc={"fpr": fpr, "tpr": tpr})
    return out


def _plot_training(histories: Dict[str, Dict[str, List[float]]], path: str) -> str:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    from .fileio import atomic_path

    fig = Figure(figsize=(9, 3.5), dpi=110)
    ax_l, ax_a = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name, h in histories.items():
        k = max(1, len(h["loss"]) // 50)
        smooth = lambda v: np.convolve(v, np.ones(k) / k, mode="valid")  # noqa: E731
        ax_l.plot(smooth(np.asarray(h["loss"])), label=name)
        ax_a.plot(smooth(np.asarray(h["accuracy"])), label=name)
    ax_l.set(title="training loss (head's own scale)", xlabel="step")
    ax_a.set(title="training accuracy (argmax cosine)", xlabel="step", ylim=(0, 1))
    ax_a.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png")
    return path


def _format_table(results: Dict[str, Dict[str, Any]]) -> str:
    heads = list(results)
    rows = [
        ("verify.bin accuracy (10-fold)", lambda r: f"{100 * r['verify']['accuracy']:.2f}%"),
        ("IJB-SYNTH TAR@FAR=1e-3", lambda r: f"{100 * r['ijb']['tar_at_far'][1e-3]:.2f}%"),
        ("IJB-SYNTH TAR@FAR=1e-2", lambda r: f"{100 * r['ijb']['tar_at_far'][1e-2]:.2f}%"),
        ("IJB-SYNTH TAR@FAR=1e-1", lambda r: f"{100 * r['ijb']['tar_at_far'][1e-1]:.2f}%"),
        ("IJB-SYNTH AUC", lambda r: f"{r['ijb']['auc']:.4f}"),
        ("hard HQ: verify accuracy", lambda r: f"{100 * r['hard_hq']['verify_accuracy']:.2f}%"),
        ("hard HQ: IJB TAR@FAR=1e-1", lambda r: f"{100 * r['hard_hq']['ijb_tar_at_far'][1e-1]:.2f}%"),
        ("hard HQ: IJB AUC", lambda r: f"{r['hard_hq']['ijb_auc']:.4f}"),
        ("train accuracy (last 20 steps)", lambda r: f"{100 * np.mean(r['train']['history']['accuracy'][-20:]):.1f}%"),
        ("train time", lambda r: f"{r['train']['seconds']:.0f} s"),
    ]
    width = max(len(r[0]) for r in rows) + 2
    lines = ["".ljust(width) + "".join(h.rjust(12) for h in heads)]
    for label, fn in rows:
        lines.append(label.ljust(width) + "".join(_cell(fn, results[h]).rjust(12) for h in heads))
    return "\n".join(lines)


def _cell(fn: Callable[[Dict[str, Any]], str], result: Dict[str, Any]) -> str:
    """A table cell; ``n/a`` where the value cannot be computed (e.g. a split without genuine pairs)."""
    text = fn(result)
    return "n/a" if "nan" in text.lower() else text


def run_quickstart(cfg: QuickstartConfig, progress: bool = True, echo: Callable[[str], None] = print) -> Dict[str, Any]:
    """Run the whole job; returns the results (also written to ``cfg.out/results.json``)."""
    from .data.synthetic import IJB_TARGET, generate_dataset
    from .eval import evaluate_ijb, evaluate_verification, torch_embedder
    from .eval.plots import plot_roc
    from .export.modelzoo import pack_model_zoo, verify_pack
    from .export.onnx import export_onnx

    cfg.validate()
    t0 = time.perf_counter()
    out = os.path.abspath(cfg.out)
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    echo(f"[1/4] synthetic data: {cfg.identities} identities x {cfg.images_per_id} images -> {out}/data")
    paths = generate_dataset(os.path.join(out, "data"), identities=cfg.identities,
                             images_per_id=cfg.images_per_id, seed=cfg.seed, progress=progress)
    data_dir = os.path.dirname(paths["rec"])

    results: Dict[str, Dict[str, Any]] = {}
    for head in cfg.heads:
        echo(f"[2/4] train {cfg.network} with the {head} head: {cfg.steps} steps x {cfg.batch_size} images")
        tr = train_head(cfg, data_dir, head, os.path.join(out, head), progress=progress)
        if tr["reused"]:
            echo(f"      reused {tr['model_path']}")
        embed = torch_embedder(tr["model"], device=cfg.device)
        key = sha256_file(tr["model_path"])[:16]
        echo(f"[3/4] evaluate {head}")
        cache = os.path.join(out, head, "features")
        verify = evaluate_verification(embed, paths["verify_bin"], cache_dir=os.path.join(cache, "verify"),
                                       cache_key=key)
        ijb = evaluate_ijb(embed, paths["ijb"], IJB_TARGET, cache_dir=os.path.join(cache, "ijb"), cache_key=key,
                           identification=False)
        results[head] = {"train": tr, "verify": verify, "ijb": ijb,
                         "hard_hq": hard_hq_metrics(verify, paths["verify_pairs"], ijb, paths["ijb_pair_splits"])}

    first = cfg.heads[0]
    echo(f"[4/4] export the {first} model to ONNX and an insightface model-zoo pack")
    onnx_path = os.path.join(out, first, "recognition.onnx")
    pack_dir = os.path.join(out, f"pack_{first}")
    with _quiet_third_party():
        report = export_onnx(results[first]["train"]["model"], onnx_path)
        pack_model_zoo(onnx_path, pack_dir, model_id=f"{first}-quickstart")
        zoo = verify_pack(pack_dir, reference=results[first]["train"]["model"])

    plots = {
        "roc": plot_roc({h: (r["ijb"]["roc"]["fpr"], r["ijb"]["roc"]["tpr"]) for h, r in results.items()},
                        os.path.join(out, "roc_ijb_synth.png"), title="IJB-SYNTH 1:1 (all pairs)"),
        "roc_hard_hq": plot_roc({h: (r["hard_hq"]["ijb_roc"]["fpr"], r["hard_hq"]["ijb_roc"]["tpr"])
                                 for h, r in results.items()},
                                os.path.join(out, "roc_ijb_synth_hard_hq.png"), title="IJB-SYNTH hard high-quality pairs"),
        "training": _plot_training({h: r["train"]["history"] for h, r in results.items()},
                                   os.path.join(out, "training.png")),
    }
    table = _format_table(results)
    summary = {
        "config": dataclasses.asdict(cfg),
        "heads": {h: {"verify": {k: r["verify"][k] for k in ("accuracy", "accuracy_std", "xnorm", "auc")},
                      "ijb": {k: r["ijb"][k] for k in ("tar_at_far", "auc", "pairs", "templates")},
                      "hard_hq": {k: v for k, v in r["hard_hq"].items() if k != "ijb_roc"},
                      "train_seconds": r["train"]["seconds"], "model": r["train"]["model_path"]}
                  for h, r in results.items()},
        "export": {"onnx": onnx_path, "parity": dataclasses.asdict(report) if dataclasses.is_dataclass(report)
                   else str(report), "pack": pack_dir, "insightface": zoo},
        "plots": plots, "wall_seconds": time.perf_counter() - t0,
    }
    _write_json(os.path.join(out, "results.json"), summary)
    cos = zoo.get("cosine", {})
    echo("")
    echo(table)
    echo("")
    echo(f"export: {onnx_path}")
    echo(f"        onnxruntime vs torch, min cosine at batch 1 and 8: {_min_cos(report):.7f}")
    echo(f"pack:   {pack_dir} (insightface loads it as {', '.join(sorted(set(zoo.get('routed', {}).values())))}; "
         f"embedding cosine to torch {min(cos.values()) if cos else float('nan'):.7f})")
    echo(f"plots:  {plots['roc']}\n        {plots['roc_hard_hq']}\n        {plots['training']}")
    echo(f"results: {os.path.join(out, 'results.json')}   wall time {summary['wall_seconds']:.0f} s")
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
