"""Backbone weights files: reading an arcface_torch ``model.pt`` (or a checkpoint) as a state dict of tensors
(:func:`read_state_dict`) and loading one strictly, with a one-line account of what does not fit
(:func:`load_weights`)."""
from __future__ import annotations

import os
from typing import Dict, Mapping, Optional, Union

import torch
from torch import Tensor, nn

__all__ = ["read_state_dict", "infer_embedding_size", "load_weights"]


def read_state_dict(path: Union[str, os.PathLike]) -> Dict[str, Tensor]:
    """Read a backbone state dict saved by arcface_torch.

    Accepts ``model.pt`` (the backbone's state dict) and
    ``checkpoint_gpu_{rank}.pt`` (its ``"state_dict_backbone"`` entry); a ``module.``
    prefix left by DistributedDataParallel is stripped. Loaded with
    ``torch.load(weights_only=True)``: a file holding anything but tensors and
    plain containers is refused.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a state dict of tensors.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle / zip errors have many types
        raise ValueError(
            f"{path}: cannot be read as a weights-only torch checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict_backbone"), Mapping):
        obj = obj["state_dict_backbone"]
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{path}: expected a backbone state dict (name -> tensor), got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"{path}: expected a state dict of tensors; key {bad[0]!r} holds {type(obj[bad[0]]).__name__}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def infer_embedding_size(state: Mapping[str, Tensor]) -> Optional[int]:
    """``D`` from the last BatchNorm's running mean (the final BatchNorm1d of every face backbone here)."""
    means = [v for k, v in state.items() if k.endswith("running_mean") and v.dim() == 1]
    return int(means[-1].numel()) if means else None


def _describe_mismatch(model: nn.Module, state: Mapping[str, Tensor]) -> Optional[str]:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs network {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or shapes):
        return None
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:3])}{more}")
    return "; ".join(parts)


def load_weights(model: nn.Module, path: Union[str, os.PathLike], network: str,
                 state: Optional[Mapping[str, Tensor]] = None) -> nn.Module:
    """Load the backbone weights in ``path`` into ``model`` strictly.

    Raises:
        ValueError: the file does not match ``network``; the message lists the
            missing and unexpected keys and the shape mismatches.
    """
    state = read_state_dict(path) if state is None else state
    problem = _describe_mismatch(model, state)
    if problem:
        raise ValueError(f"{os.fspath(path)} does not match network {network!r}: {problem}; "
                         "pass the network the model was trained with")
    model.load_state_dict(state, strict=True)
    return model
