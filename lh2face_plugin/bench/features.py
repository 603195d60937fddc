"""Raw embeddings (before normalisation) of the evaluation set, cached per model and set.

The raw norm |z| is what norm-aware heads read as quality; the compact backbones (and
arcface_torch's) end in a BatchNorm1d, so the network's output is that raw vector.
:func:`lh2face_plugin.eval.embed.torch_embedder` returns the output as it is (it does not
normalise), one view per image (no flip augmentation).
"""
from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np
from tqdm.auto import tqdm

from ..eval.embed import torch_embedder
from ..fileio import save_npy, write_json
from .evalset import EvalSet

__all__ = ["raw_features", "cached_features"]


def raw_features(model, ev: EvalSet, *, device: str = "cpu", batch_size: int = 128, cache: Optional[str] = None,
                 model_key: str = "", progress: bool = True, desc: str = "embed") -> np.ndarray:
    """``(N, D)`` float32 raw embeddings of every image of ``ev``.

    Args:
        model: a backbone mapping ``[B, 3, 112, 112]`` in [-1, 1] to ``[B, D]``.
        cache: path of an ``.npy`` file; reused when its ``.json`` sidecar records the same
            ``model_key`` and evaluation-set digest, (re)written otherwise.
        model_key: identifies the model's weights (e.g. the SHA-256 of ``model.pt``).

    A cache whose file is damaged, truncated, of another shape or not finite is computed again.

    Raises:
        FloatingPointError: the model's output is NaN/Inf for some image (the message names it).
    """
    feats = cached_features(cache, model_key, ev) if cache else None
    if feats is not None:
        return feats
    embed = torch_embedder(model, device=device)
    parts = []
    bar = tqdm(total=len(ev), desc=desc, unit="img", disable=not progress, leave=False)
    for lo in range(0, len(ev), batch_size):
        idx = np.arange(lo, min(len(ev), lo + batch_size))
        parts.append(np.asarray(embed(ev.images(idx)), dtype=np.float32))
        bar.update(idx.size)
    bar.close()
    feats = np.concatenate(parts)
    bad = np.nonzero(~np.isfinite(feats).all(axis=1))[0]
    if bad.size:
        raise FloatingPointError(f"{desc}: the model's embedding of evaluation image {int(bad[0])} is NaN/Inf "
                                 f"({bad.size} of {len(ev)} images); no metric is computed from it")
    if cache and model_key:
        save_npy(cache, feats)
        write_json(cache + ".json", _cache_key(model_key, ev))
    return feats


def _cache_key(model_key: str, ev: EvalSet) -> dict:
    return {"model": model_key, "evalset": ev.sha256, "images": len(ev)}


def cached_features(cache: str, model_key: str, ev: EvalSet) -> Optional[np.ndarray]:
    """The features cached in ``cache`` for this model and set, or ``None`` (absent, of another model
    or set, damaged, truncated, of another shape or not finite)."""
    if not (model_key and os.path.exists(cache) and os.path.exists(cache + ".json")):
        return None
    try:
        with open(cache + ".json") as fh:
            same = json.load(fh) == _cache_key(model_key, ev)
        feats = np.load(cache) if same else None
    except (OSError, ValueError):
        return None
    if (feats is not None and feats.ndim == 2 and feats.shape[0] == len(ev) and feats.dtype == np.float32
            and np.isfinite(feats).all()):
        return feats
    return None
