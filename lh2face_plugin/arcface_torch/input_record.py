"""What a ``train_v2`` run with ``config.input_module`` needs to be evaluated later: ``lh2face_input_module.json``.

arcface_torch saves ``model.pt`` as the state dict of the model ``get_model`` returned. With an input module that
is the wrapped model (``render.*`` and ``backbone.*``), which no ``--network`` alone rebuilds. When the plugin wraps
the backbone it writes, on rank 0, ``<config.output>/lh2face_input_module.json`` beside where ``model.pt`` will be:
the module's name, the parameters given and resolved, and the ``get_model`` call (network name and its
``num_features``). ``lh2face eval`` finds it beside ``model.pt`` (:func:`read_record`) and rebuilds the wrapped model
(:func:`load_model`) from the checkout's ``backbones.get_model``; the reconstruction's weights come from ``model.pt``,
so the ``checkpoint`` file need not exist any more.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping, Optional

import torch

from .. import build_input_module
from ..compact import build_backbone, is_compact
from ..fileio import write_json
from ..input_args import recorded_input_kwargs, resolved_input_kwargs
from ..weights import load_weights, read_state_dict
from .networks import checkout_get_model

__all__ = ["RECORD_NAME", "FORMAT", "write_record", "read_record", "load_model"]

RECORD_NAME = "lh2face_input_module.json"
FORMAT = "lh2face-input-module/1"


def _rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def write_record(output: Optional[str], name: str, kwargs: Mapping[str, Any], network: str,
                 get_model_kwargs: Mapping[str, Any]) -> Optional[str]:
    """Write the record into ``output`` on rank 0 (atomically); returns its path, ``None`` elsewhere."""
    if not output or _rank() != 0:
        return None
    os.makedirs(output, exist_ok=True)
    path = os.path.join(output, RECORD_NAME)
    write_json(path, {"format": FORMAT, "name": name, "kwargs": dict(kwargs),
                      "resolved": resolved_input_kwargs(name, kwargs), "network": network,
                      "get_model_kwargs": {k: v for k, v in get_model_kwargs.items()
                                           if isinstance(v, (int, float, str, bool, type(None)))}})
    return path


def read_record(model_path: str) -> Optional[Dict[str, Any]]:
    """The record beside ``model_path``, or ``None`` when there is none.

    Raises:
        ValueError: a file of that name that is not such a record.
    """
    path = os.path.join(os.path.dirname(os.path.abspath(model_path)), RECORD_NAME)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as fh:
            record = json.load(fh)
    except ValueError as exc:
        raise ValueError(f"{path}: not readable as JSON ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"{path}: not a record of lh2face_plugin's input module (format {FORMAT!r})")
    return record


def load_model(model_path: str, record: Mapping[str, Any], arcface_root: Optional[str] = None) -> torch.nn.Module:
    """The wrapped model ``record`` describes with the weights of ``model_path``, on the CPU, in eval mode.

    The backbone comes from the checkout's ``backbones.get_model`` (``arcface_root`` or ``$ARCFACE_TORCH_ROOT``),
    or from the plugin's presets for their names; the input module is built from the recorded parameters without
    ``checkpoint`` and ``mode`` (``model.pt`` holds its weights).

    Raises:
        ValueError: ``model_path`` does not match (missing / unexpected keys, shapes).
    """
    network = record["network"]
    dim = int(record.get("get_model_kwargs", {}).get("num_features", 512))
    if is_compact(network):
        backbone = build_backbone(network, embedding_size=dim)
    else:
        backbone = checkout_get_model(arcface_root)(network, dropout=0.0, fp16=False, num_features=dim)
    kwargs = {k: v for k, v in recorded_input_kwargs(record).items() if k not in ("checkpoint", "mode")}
    model = build_input_module(record["name"], **kwargs).wrap(backbone)
    return load_weights(model, model_path, f"{network} behind {record['name']!r}",
                        state=read_state_dict(model_path)).eval()
