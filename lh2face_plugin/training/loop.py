"""The training loop (:func:`train_model`): one head on a RecordIO set, fair by construction (see the
package's docstring); a finished run with the same key is reused."""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import replace
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from ..classifier import NormalizedClassifier
from ..data.dataset import FaceRecordDataset
from ..export.onnx import eval_mode
from ..fileio import atomic_path, sha256_file, write_json
from ..headspec import HeadSpec
from ..input_args import resolved_input_kwargs
from ..registry import HEADS
from .clipping import GradClipper
from .config import TrainConfig
from .keys import data_fingerprint, spec_key
from .model import build_model
from .runs import TrainResult, check_out_dir, is_whole, load_run, read_info
from .schedule import batch_plan, lr_factor

__all__ = ["PROXY_INIT_STD", "train_model"]

PROXY_INIT_STD = 0.01
"""Class proxies start as N(0, 0.01^2), like :class:`~lh2face_plugin.classifier.NormalizedClassifier`."""


def _canonical_loss(clf, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``L_FR^canon``: the head's loss on K canonical embeddings with the first K labels, the head in
    eval mode (its state moves on the real faces only, as in the plugin's Partial FC)."""
    with eval_mode(clf.head):
        return clf(embeddings, labels[:embeddings.shape[0]])


def train_model(cfg: TrainConfig, data_dir: str, head: Union[str, HeadSpec], out_dir: str, *,
                head_kwargs: Optional[Mapping[str, Any]] = None, label: Optional[str] = None,
                progress: bool = True, reuse_from: Sequence[str] = (),
                data_key: Optional[str] = None, echo: Callable[[str], None] = print,
                input_module: Optional[str] = None, input_kwargs: Optional[Mapping[str, Any]] = None) -> TrainResult:
    """Train ``cfg.network`` (the spec's ``network`` when it names one) with the ``head`` on the RecordIO
    set ``data_dir``.

    Writes ``out_dir/model.pt`` (the backbone's state dict, loadable with
    ``lh2face eval ... --model out_dir/model.pt --network cfg.network``) and
    ``out_dir/train.json`` (``format``, ``key``, ``settings``, ``head``, ``head_kwargs``,
    ``history`` per step: ``loss``, ``ce``, ``extra``, ``accuracy``, ``norm`` (mean raw
    feature norm), ``grad_norm``, ``clipped``, ``lr``; ``clip`` activity, ``head_state``
    (the head's scalar buffers at the end), ``seconds``).

    Args:
        cfg: settings (validated here).
        data_dir: folder with ``train.rec``/``train.idx`` (insightface layout with a header record).
        head: the head (a :class:`~lh2face_plugin.headspec.HeadSpec`, its hyperparameters resolved, is
            built once here), or a registered head name with ``head_kwargs`` its parameters.
        out_dir: run folder. An earlier run there with the same key is loaded, one with
            another key is replaced (a ``model.pt`` without our ``train.json`` is refused).
        label: name in the progress bar.
        reuse_from: other run folders to copy a finished run with the same key from.
        data_key: :func:`data_fingerprint` of ``data_dir`` when already known.
        input_module, input_kwargs: a registered input module (``"render"``) the backbone
            trains behind (:func:`build_model`), when ``head`` is a name; its loss terms (``terms["total"]`` of
            :meth:`~lh2face_plugin.render.module.RenderInputModule.losses`, the head's loss on
            the canonical rows included) are added to the head's loss, and ``model.pt`` holds
            the wrapped model's state (``render.*`` and ``backbone.*``).

    Raises:
        FloatingPointError: the loss became NaN/Inf (lower the learning rate).
    """
    if isinstance(head, HeadSpec):
        if head_kwargs or input_module or input_kwargs:
            raise ValueError("head_kwargs, input_module and input_kwargs are only used when head is given by name")
        spec = head
    else:
        spec = HeadSpec.of(head, head_kwargs, input_module=input_module, input_kwargs=input_kwargs)
    if spec.network is not None:
        cfg = replace(cfg, network=spec.network)
    cfg.validate()
    HEADS.get(spec.name)
    data_key = data_key or data_fingerprint(data_dir)
    key = spec_key(cfg, spec, data_key)
    label = label or spec.label
    os.makedirs(out_dir, exist_ok=True)
    info = check_out_dir(out_dir)
    if is_whole(out_dir, info, key):
        return load_run(out_dir, info)
    for donor in reuse_from:
        d_info = read_info(donor)
        if is_whole(donor, d_info, key):
            with atomic_path(os.path.join(out_dir, "model.pt"), ".pt") as tmp:
                shutil.copyfile(os.path.join(donor, "model.pt"), tmp)
            write_json(os.path.join(out_dir, "train.json"), d_info)
            return load_run(out_dir, d_info)
    if info is not None:
        echo(f"      {out_dir}: settings changed since its last run, retraining")

    device = torch.device(cfg.device)
    dataset = FaceRecordDataset(data_dir, random_flip=False)
    if dataset.num_classes is None:
        raise ValueError(f"{data_dir}: the RecordIO set has no insightface header record (class count unknown)")
    num_classes = int(dataset.num_classes)
    torch.manual_seed(cfg.seed)
    backbone, module = build_model(cfg.network, cfg.embedding_size, spec.input_module, spec.input_kwargs)
    clf = NormalizedClassifier(spec.name, cfg.embedding_size, num_classes, head_kwargs=spec.kwargs)
    gen = torch.Generator().manual_seed(int(cfg.seed) + 0x70726F78)
    with torch.no_grad():
        clf.weight.copy_(torch.normal(0.0, PROXY_INIT_STD, tuple(clf.weight.shape), generator=gen))
    backbone.to(device).train()
    clf.to(device).train()
    params = list(backbone.parameters()) + list(clf.parameters())
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg.steps, cfg.warmup))
    clipper = GradClipper(cfg.clip, cfg.clip_factor)
    indices, flips = batch_plan(len(dataset), cfg.steps, cfg.batch_size, cfg.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=[list(r) for r in indices],
                                         num_workers=cfg.workers, persistent_workers=False)
    names = ("loss", "ce", "extra", "accuracy", "norm", "grad_norm", "clipped", "lr")
    history: Dict[str, List[float]] = {k: [] for k in names}
    start = time.perf_counter()
    bar = tqdm(total=cfg.steps, desc=f"train {label}", disable=not progress, unit="step", leave=False)
    try:
        for step, (images, labels) in enumerate(loader):
            flip = torch.from_numpy(flips[step])
            images[flip] = images[flip].flip(-1)
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            lr_now = opt.param_groups[0]["lr"]
            try:
                emb, out = backbone.forward_train(images) if module is not None else (backbone(images), None)
                loss = clf(emb, labels)
                last = clf.last
                if module is not None:
                    loss = loss + module.losses(out, embed_fn=backbone.backbone, input_embedding=emb,
                                                canon_loss_fn=lambda e: _canonical_loss(clf, e, labels))["total"]
            except FloatingPointError as exc:
                raise FloatingPointError(f"{label}: step {step} with lr={cfg.lr:g}: {exc} "
                                         "Here: lower the learning rate") from exc
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{label}: non-finite loss at step {step} with lr={cfg.lr:g}; "
                                         "lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = clipper(list(backbone.parameters()))
            opt.step()
            sched.step()
            for k, v in (("loss", loss.item()), ("ce", float(last["ce"])), ("extra", float(last["extra"])),
                         ("accuracy", float(last["accuracy"])), ("norm", float(emb.detach().norm(dim=1).mean())),
                         ("grad_norm", grad_norm), ("clipped", float(clipper.clipped[-1])), ("lr", lr_now)):
                history[k].append(v)
            bar.update(1)
            if (step + 1) % 10 == 0:
                bar.set_postfix(loss=f"{np.mean(history['loss'][-10:]):.3f}",
                                acc=f"{np.mean(history['accuracy'][-10:]):.2f}",
                                clip=f"{100 * np.mean(history['clipped']):.0f}%")
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    backbone.cpu().eval()
    head_state = {n: float(b) for n, b in clf.head.named_buffers() if b.numel() == 1}
    info = {"format": "lh2face-train", "key": key, "label": label, "head": spec.name, "head_kwargs": dict(spec.kwargs),
            "settings": cfg.settings(), "data": {"path": os.path.abspath(data_dir), "fingerprint": data_key,
                                                 "classes": num_classes, "images": len(dataset)},
            "network": cfg.network, "embedding_size": cfg.embedding_size,
            "input_module": None if spec.input_module is None else {
                "name": spec.input_module, "kwargs": dict(spec.input_kwargs),
                "resolved": resolved_input_kwargs(spec.input_module, spec.input_kwargs)},
            "clip": clipper.activity(), "head_state": head_state,
            "final": {k: float(np.mean(history[k][-20:])) for k in ("loss", "accuracy", "norm")},
            "history": history, "seconds": seconds}
    with atomic_path(os.path.join(out_dir, "model.pt"), ".pt") as tmp:
        torch.save(backbone.state_dict(), tmp)
    info["model_sha256"] = sha256_file(os.path.join(out_dir, "model.pt"))
    write_json(os.path.join(out_dir, "train.json"), info)
    return TrainResult(backbone, os.path.join(out_dir, "model.pt"), info, False)
