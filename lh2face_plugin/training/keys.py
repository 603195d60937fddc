"""The key of a run: what decides whether a finished run is reused (:func:`spec_key`), and the digest of
its training data (:func:`data_fingerprint`)."""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping, Optional

from ..fileio import sha256_file, sha256_update_file
from ..headspec import HeadSpec
from ..input_args import previous_defaults, resolved_input_kwargs
from ..registry import HEADS
from .config import TrainConfig

__all__ = ["TRAINING_VERSION", "data_fingerprint", "run_key", "spec_key"]

TRAINING_VERSION = 3
"""Bumped when the loop changes what a run produces (invalidates reuse of older runs)."""


def data_fingerprint(data_dir: str) -> str:
    """Content digest of a RecordIO training set (``meta.json`` if present, ``property``,
    ``train.idx``, ``train.rec``)."""
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
    resolved = spec.hparams or HEADS.build(spec.name, **spec.kwargs).hparams()
    obj = {"version": TRAINING_VERSION, "train": cfg.settings(), "head": spec.name, "head_kwargs": dict(spec.kwargs),
           "hparams": resolved, "data": data}
    input_module = spec.input_module
    if input_module is not None:
        kw = dict(spec.input_kwargs)
        current = resolved_input_kwargs(input_module, {})
        for name in previous_defaults(input_module):
            kw.setdefault(name, current[name])
        if isinstance(kw.get("checkpoint"), str) and os.path.isfile(kw["checkpoint"]):
            kw["checkpoint"] = sha256_file(kw["checkpoint"])
        obj["input_module"] = {"name": input_module, "kwargs": kw}
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
