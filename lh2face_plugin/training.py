"""Training a compact backbone with one head on a RecordIO set: the loop ``lh2face quickstart``
and ``lh2face bench`` share.

Fair by construction, whatever the head:

- **Same data, order and initialisation.** The batch order and the horizontal flips come
  from a plan drawn from the *training* seed (:func:`batch_plan`; the data's own seed made
  the images), the backbone is initialised from the training seed, the class proxies from
  a generator of their own, so two heads trained with one seed see identical batches and
  start from identical weights.
- **Same schedule.** SGD (momentum 0.9, weight decay 5e-4), linear warm-up over
  ``warmup`` of the steps, then polynomial decay (power 2) to 0, as arcface_torch's
  ``PolyScheduler``; the peak learning rate is a setting (``lh2face bench --lr-sweep``
  chooses it per head with one sweep).
- **Clipping that does not favour a logit scale.** A fixed norm threshold (arcface_torch clips
  the backbone at 5) cuts s=64 heads far more often than heads whose logits are a third as
  large (measured: 20-100% of ArcFace's late steps, never LH2Face's). At step 0 every head
  sees the same weights and the same batch, and the softmax is near uniform, so the
  backbone's gradient norm there, ``g0``, is proportional to the head's logit scale. The
  default ``clip="scaled"`` clips the backbone's gradient at ``clip_factor * g0`` on every
  step: multiplying a head's loss by a constant scales ``g0`` and every later norm alike, so
  the clipping decisions do not change. ``clip_factor = 0.1`` gives ArcFace (s=64,
  ``g0`` = 52 on compact-tiny with training seed 0) about arcface_torch's threshold of 5.
  ``clip="off"`` or a number (a fixed threshold) are the alternatives. Every step's norm and
  whether it was clipped are kept in the history.

A finished run is reused when its folder holds a ``train.json`` with the same key (the
settings, the head and its parameters, and the training data's content) and a ``model.pt``
whose SHA-256 is the one recorded there.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .headspec import HeadSpec

__all__ = ["TrainConfig", "TrainResult", "train_model", "build_model", "load_trained_model", "trained_info",
           "batch_plan", "lr_factor", "GradClipper", "data_fingerprint", "run_key", "spec_key", "plot_training",
           "TRAINING_VERSION"]

TRAINING_VERSION = 3
"""Bumped when the loop changes what a run produces (invalidates reuse of older runs)."""
PROXY_INIT_STD = 0.01
"""Class proxies start as N(0, 0.01^2), like :class:`~lh2face_plugin.classifier.NormalizedClassifier`."""


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run.

    Attributes:
        network: backbone name (:func:`lh2face_plugin.backbones.available_backbones`).
        embedding_size: feature dimension D.
        steps: optimisation steps.
        batch_size: images per step.
        lr: peak SGD learning rate.
        momentum, weight_decay: SGD settings.
        warmup: fraction of the steps with a linear warm-up.
        clip: ``"scaled"`` (default), ``"off"``, or a number (fixed max gradient norm).
        clip_factor: scaled threshold = ``clip_factor`` x the gradient norm of step 0.
        seed: training seed: initialisation, batch order and flips (not the data's seed).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        workers: DataLoader worker processes (does not change the result).
    """

    network: str = "compact-tiny"
    embedding_size: int = 512
    steps: int = 300
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup: float = 0.05
    clip: Union[str, float] = "scaled"
    clip_factor: float = 0.1
    seed: int = 0
    device: str = "cpu"
    workers: int = 1

    def validate(self) -> "TrainConfig":
        from .backbones import available_backbones

        for key in ("embedding_size", "steps", "batch_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if int(self.workers) != self.workers or self.workers < 0:
            raise ValueError(f"workers must be an integer >= 0, got {self.workers!r}")
        if int(self.seed) != self.seed:
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        for key in ("lr", "clip_factor"):
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{key} must be a number > 0, got {value!r}")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup must be in [0, 1), got {self.warmup!r}")
        parse_clip(self.clip)
        if self.network not in available_backbones():
            raise ValueError(f"network must be one of {available_backbones()}, got {self.network!r}")
        if str(self.device).startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r} but CUDA is not available")
        return self

    def settings(self) -> Dict[str, Any]:
        """The settings that change what is trained (the reuse key's part; not ``workers``)."""
        d = asdict(self)
        d.pop("workers")
        d["device"] = torch.device(d["device"]).type
        d["clip"] = parse_clip(self.clip)
        return d


def parse_clip(clip: Union[str, float]) -> Union[str, float]:
    """``"scaled"``, ``"off"`` or a positive float from a setting or a CLI string."""
    if isinstance(clip, str):
        key = clip.strip().lower()
        if key in ("scaled", "off"):
            return key
        try:
            clip = float(key)
        except ValueError:
            raise ValueError(f"clip must be 'scaled', 'off' or a positive number, got {clip!r}") from None
    if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not (math.isfinite(clip) and clip > 0):
        raise ValueError(f"clip must be 'scaled', 'off' or a positive number, got {clip!r}")
    return float(clip)


def lr_factor(step: int, steps: int, warmup: float = 0.05) -> float:
    """Learning-rate multiplier at ``step`` (0-based): linear warm-up, then ``(1 - progress)^2``."""
    w = max(1, int(warmup * steps)) if warmup > 0 else 0
    if step < w:
        return (step + 1) / w
    return max(0.0, 1.0 - (step - w) / max(1, steps - w)) ** 2


class GradClipper:
    """Gradient-norm clipping of ``params``; records every step's norm and whether it was cut.

    Args:
        mode: ``"scaled"`` (max norm ``factor * g0``, ``g0`` the norm of the first call),
            ``"off"`` or a fixed max norm (float).
        factor: see ``mode``.
    """

    def __init__(self, mode: Union[str, float], factor: float = 0.1) -> None:
        self.mode = parse_clip(mode)
        self.factor = float(factor)
        self.norms: List[float] = []
        self.clipped: List[bool] = []

    def threshold(self, norm: float) -> float:
        """Max norm for a step whose unclipped norm is ``norm``."""
        if self.mode == "off":
            return math.inf
        if self.mode == "scaled":
            return self.factor * (self.norms[0] if self.norms else norm)
        return float(self.mode)

    def __call__(self, params: Sequence[torch.Tensor]) -> float:
        """Clip in place; returns the norm before clipping."""
        grads = [p.grad for p in params if p.grad is not None]
        norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])))
        limit = self.threshold(norm)
        if math.isfinite(limit) and norm > limit:  # as clip_grad_norm_: scale by limit / (norm + 1e-6)
            for g in grads:
                g.mul_(limit / (norm + 1e-6))
        self.norms.append(norm)
        self.clipped.append(bool(math.isfinite(limit) and norm > limit))
        return norm

    def activity(self) -> Dict[str, Any]:
        """Fraction of steps clipped, overall and over the last quarter of the steps; the threshold."""
        c = np.asarray(self.clipped, dtype=bool)
        last = c[-max(1, len(c) // 4):] if len(c) else c
        limit = self.threshold(self.norms[0]) if self.norms else math.nan
        return {"mode": self.mode, "factor": self.factor if self.mode == "scaled" else None,
                "threshold": limit if math.isfinite(limit) else None,
                "fraction": float(c.mean()) if len(c) else 0.0,
                "fraction_last_quarter": float(last.mean()) if len(last) else 0.0,
                "median_norm": float(np.median(self.norms)) if self.norms else math.nan}


def batch_plan(num_images: int, steps: int, batch_size: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Image indices and flip flags of every step, from the training seed only.

    Epochs are permutations of the images; the last incomplete batch of an epoch is dropped
    (as ``DataLoader(drop_last=True)``).

    Returns:
        ``indices`` (steps, batch_size) int64 and ``flips`` (steps, batch_size) bool.
    """
    if batch_size > num_images:
        raise ValueError(f"batch_size {batch_size} is larger than the training set ({num_images} images)")
    rng = np.random.default_rng([int(seed), 0x62617463])
    per_epoch = num_images // batch_size
    rows: List[np.ndarray] = []
    while len(rows) < steps:
        perm = rng.permutation(num_images)
        rows += [perm[i * batch_size:(i + 1) * batch_size] for i in range(min(per_epoch, steps - len(rows)))]
    flips = rng.random((steps, batch_size)) < 0.5
    return np.stack(rows).astype(np.int64), flips


def data_fingerprint(data_dir: str) -> str:
    """Content digest of a RecordIO training set (``meta.json`` if present, ``property``,
    ``train.idx``, ``train.rec``)."""
    from .fileio import sha256_update_file

    h = hashlib.sha256()
    for name in ("meta.json", "property", "train.idx", "train.rec"):
        path = os.path.join(data_dir, name)
        if not os.path.exists(path):
            if name in ("train.idx", "train.rec"):
                raise FileNotFoundError(f"{path}: no such file (expected a RecordIO training set)")
            continue
        h.update(name.encode() + b"\0")
        sha256_update_file(h, path)
    return h.hexdigest()[:16]


def run_key(cfg: TrainConfig, head: str, head_kwargs: Mapping[str, Any], data: str,
            input_module: Optional[str] = None, input_kwargs: Optional[Mapping[str, Any]] = None) -> str:
    """:func:`spec_key` of a head given by its parts."""
    return spec_key(cfg, HeadSpec.of(head, head_kwargs, input_module=input_module, input_kwargs=input_kwargs), data)


def spec_key(cfg: TrainConfig, spec: HeadSpec, data: str) -> str:
    """Key of a run: the training settings, the head and every hyperparameter it is built with (its
    defaults resolved, so a changed default is another run; the head is built here only when ``spec``
    has no resolved ``hparams``), the data's digest, and the input module
    with its parameters (a ``checkpoint`` parameter by its file's content) plus the current defaults of
    the parameters whose default changed (its class's ``PREVIOUS_DEFAULTS``): a recorded run that relied
    on an old default is not reused as the new one, while one that named its values keeps its key."""
    from .registry import HEADS

    resolved = spec.hparams or HEADS.build(spec.name, **spec.kwargs).hparams()
    obj = {"version": TRAINING_VERSION, "train": cfg.settings(), "head": spec.name, "head_kwargs": dict(spec.kwargs),
           "hparams": resolved, "data": data}
    input_module = spec.input_module
    if input_module is not None:
        from .fileio import sha256_file

        kw = dict(spec.input_kwargs)
        current = _resolved_input_kwargs(input_module, {})
        for name in _previous_defaults(input_module):
            kw.setdefault(name, current[name])
        if isinstance(kw.get("checkpoint"), str) and os.path.isfile(kw["checkpoint"]):
            kw["checkpoint"] = sha256_file(kw["checkpoint"])
        obj["input_module"] = {"name": input_module, "kwargs": kw}
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _previous_defaults(input_module: str) -> Dict[str, Any]:
    """The input module class's ``PREVIOUS_DEFAULTS``: parameters whose default changed, at their old values."""
    from .registry import INPUT_MODULES

    return dict(getattr(INPUT_MODULES.get(input_module), "PREVIOUS_DEFAULTS", None) or {})


def _resolved_input_kwargs(input_module: str, kwargs: Mapping[str, Any]) -> Dict[str, Any]:
    """Every constructor parameter of the input module, ``kwargs`` over its current defaults."""
    import inspect

    from .registry import INPUT_MODULES

    factory = INPUT_MODULES.get(input_module)
    resolve = getattr(factory, "resolved_kwargs", None)
    if resolve is not None:
        return dict(resolve(dict(kwargs)))
    params = inspect.signature(factory).parameters
    out = {n: p.default for n, p in params.items() if p.default is not inspect.Parameter.empty}
    out.update(kwargs)
    return out


def recorded_input_kwargs(record: Mapping[str, Any]) -> Dict[str, Any]:
    """The parameters a run's input module was built with, from its ``train.json`` ``"input_module"``.

    A record written since defaults can change holds them all (``"resolved"``). An older one holds only
    the parameters given; those not given took the defaults of the time, which for parameters whose default
    changed since are the class's ``PREVIOUS_DEFAULTS``.
    """
    if record.get("resolved") is not None:
        return dict(record["resolved"])
    kwargs = dict(record.get("kwargs") or {})
    return {**_previous_defaults(record["name"]), **kwargs}


def build_model(network: str, embedding_size: int, input_module: Optional[str] = None,
                input_kwargs: Optional[Mapping[str, Any]] = None) -> Tuple[torch.nn.Module, Optional[torch.nn.Module]]:
    """``(model, input module)``: the backbone, or the backbone wrapped by a registered input
    module (``model(images) -> embeddings`` either way); the module is ``None`` without one."""
    from .backbones import build_backbone

    backbone = build_backbone(network, embedding_size=embedding_size)
    if input_module is None:
        return backbone, None
    from .registry import INPUT_MODULES

    module = INPUT_MODULES.build(input_module, **dict(input_kwargs or {}))
    return module.wrap(backbone), module


@dataclass
class TrainResult:
    """What :func:`train_model` returns.

    Attributes:
        model: the trained backbone (CPU, eval mode).
        model_path: ``out_dir/model.pt`` (the backbone's state dict).
        info: the content of ``out_dir/train.json`` (key, settings, history, clipping, seconds).
        reused: True when an earlier identical run was loaded instead of trained.
    """

    model: torch.nn.Module
    model_path: str
    info: Dict[str, Any]
    reused: bool

    @property
    def history(self) -> Dict[str, List[float]]:
        return self.info["history"]

    @property
    def seconds(self) -> float:
        return float(self.info["seconds"])


def _read_info(out_dir: str) -> Optional[Dict[str, Any]]:
    path = os.path.join(out_dir, "train.json")
    try:
        from .fileio import open_regular

        with open_regular(path, "a train.json", text=True) as fh:
            info = json.load(fh)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("format") == "lh2face-train" else None


def _load(out_dir: str, info: Dict[str, Any]) -> TrainResult:
    model_path = os.path.join(out_dir, "model.pt")
    return TrainResult(_rebuild(model_path, info), model_path, info, True)


def _rebuild(model_path: str, info: Dict[str, Any]) -> torch.nn.Module:
    """The model ``info`` (a ``train.json``) describes, with the weights of ``model_path``, in eval mode.

    An input module is built without its ``checkpoint`` and ``mode`` parameters: ``model.pt`` holds its
    weights (``render.*``), so the model reloads after the checkpoint file is gone, and the mode (which
    part trains) means nothing to a model rebuilt for evaluation."""
    record = os.path.join(os.path.dirname(os.path.abspath(model_path)), "train.json")
    module = info.get("input_module") or {}
    if not isinstance(module, dict) or not all(isinstance(module.get(k) or {}, dict) for k in ("kwargs", "resolved")):
        raise ValueError(f"{record}: key 'input_module' must be an object with 'name' and 'kwargs'")
    recorded = recorded_input_kwargs(module) if module.get("name") else {}
    kwargs = {k: v for k, v in recorded.items() if k not in ("checkpoint", "mode")}
    network, size = info.get("network"), info.get("embedding_size")
    if not isinstance(network, str) or isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"{record}: keys 'network' (a name) and 'embedding_size' (an integer >= 1) are required")
    state = torch.load(model_path, map_location="cpu", weights_only=True)  # sizes bounded by the file
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{model_path}: not a state dict of tensors")

    def build():
        return build_model(network, size, module.get("name"), kwargs)[0]

    with torch.device("meta"):  # train.json's architecture, no memory: its sizes are checked first
        skeleton = build()
    want = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state.items()}
    if want != have:
        key = next(k for k in list(want) + list(have) if want.get(k) != have.get(k))
        raise ValueError(f"{record}: the model it describes ({network}, embedding_size {size}"
                         f"{', input module ' + str(module.get('name')) if module.get('name') else ''}) does not fit "
                         f"{os.path.basename(model_path)}: tensor {key!r} is {want.get(key, 'absent')} there and "
                         f"{have.get(key, 'absent')} in the file")
    model = build()
    model.load_state_dict(state)
    return model.eval()


def trained_info(model_path: str) -> Optional[Dict[str, Any]]:
    """The ``train.json`` beside ``model_path`` when :func:`train_model` wrote both, else ``None``."""
    return _read_info(os.path.dirname(os.path.abspath(model_path)))


def load_trained_model(model_path: str) -> torch.nn.Module:
    """Reload a ``model.pt`` written by :func:`train_model` through :func:`build_model` (the backbone,
    or the wrapped model of a run with an input module such as ``@render``), in eval mode.

    Raises:
        FileNotFoundError: no ``train.json`` of :func:`train_model` beside ``model_path``.
        ValueError: ``model_path`` is not the model that ``train.json`` records (other bytes).
    """
    from .fileio import sha256_file

    info = trained_info(model_path)
    if info is None:
        raise FileNotFoundError(f"{model_path}: no train.json of lh2face's training loop beside it")
    if info.get("model_sha256") and info["model_sha256"] != sha256_file(model_path):
        raise ValueError(f"{model_path} is not the model its train.json records (changed since training)")
    return _rebuild(model_path, info)


def _whole(out_dir: str, info: Optional[Dict[str, Any]], key: str) -> bool:
    """A finished run with this key whose model file is the one it recorded (not cut short)."""
    from .fileio import sha256_file

    path = os.path.join(out_dir, "model.pt")
    return (info is not None and info.get("key") == key and os.path.exists(path)
            and info.get("model_sha256") == sha256_file(path))


def _check_out_dir(out_dir: str) -> Optional[Dict[str, Any]]:
    """The folder's earlier run (or None); refuses a folder holding a model this code did not write."""
    info = _read_info(out_dir)
    if info is None and os.path.exists(os.path.join(out_dir, "model.pt")):
        record = os.path.join(out_dir, "train.json")
        why = "its train.json is damaged or not lh2face's" if os.path.exists(record) else "no train.json"
        raise FileExistsError(f"{out_dir} holds a model.pt that lh2face did not train ({why}); "
                              "move it away or choose another output folder")
    return info


def _canonical_loss(clf, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``L_FR^canon``: the head's loss on K canonical embeddings with the first K labels, the head in
    eval mode (its state moves on the real faces only, as in the plugin's Partial FC)."""
    from .export.onnx import eval_mode

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
    from tqdm.auto import tqdm

    from .classifier import NormalizedClassifier
    from .data.dataset import FaceRecordDataset
    from .fileio import atomic_path, sha256_file, write_json
    from .registry import HEADS

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
    info = _check_out_dir(out_dir)
    if _whole(out_dir, info, key):
        return _load(out_dir, info)
    for donor in reuse_from:
        d_info = _read_info(donor)
        if _whole(donor, d_info, key):
            with atomic_path(os.path.join(out_dir, "model.pt"), ".pt") as tmp:
                shutil.copyfile(os.path.join(donor, "model.pt"), tmp)
            write_json(os.path.join(out_dir, "train.json"), d_info)
            return _load(out_dir, d_info)
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
                "resolved": _resolved_input_kwargs(spec.input_module, spec.input_kwargs)},
            "clip": clipper.activity(), "head_state": head_state,
            "final": {k: float(np.mean(history[k][-20:])) for k in ("loss", "accuracy", "norm")},
            "history": history, "seconds": seconds}
    with atomic_path(os.path.join(out_dir, "model.pt"), ".pt") as tmp:
        torch.save(backbone.state_dict(), tmp)
    info["model_sha256"] = sha256_file(os.path.join(out_dir, "model.pt"))
    write_json(os.path.join(out_dir, "train.json"), info)
    return TrainResult(backbone, os.path.join(out_dir, "model.pt"), info, False)


def plot_training(histories: Mapping[str, Mapping[str, Sequence[float]]], path: str) -> str:
    """Loss, training accuracy, mean feature norm and gradient norm per run (PNG, atomic)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    from .fileio import atomic_path

    fig = Figure(figsize=(12, 6.5), dpi=100)
    axes = [fig.add_subplot(2, 2, i + 1) for i in range(4)]
    panels = (("loss", "training loss (head's own scale)"), ("accuracy", "training accuracy (argmax cosine)"),
              ("norm", "mean raw feature norm |z|"), ("grad_norm", "backbone gradient norm (before clipping)"))
    for ax, (key, title) in zip(axes, panels):
        for name, h in histories.items():
            v = np.asarray(h.get(key, ()), dtype=float)
            if not v.size:
                continue
            k = max(1, v.size // 50)
            ax.plot(np.convolve(v, np.ones(k) / k, mode="valid"), label=name, lw=1)
        ax.set(title=title, xlabel="step")
    axes[1].set_ylim(0, 1)
    axes[3].set_yscale("log")
    axes[1].legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png")
    return path
