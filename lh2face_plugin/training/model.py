"""The model a run trains: the backbone, alone or behind an input module (:func:`build_model`), and its
rebuild from a ``train.json`` with the weights of its ``model.pt`` (:func:`rebuild_model`)."""
from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from ..compact import build_backbone
from ..input_args import recorded_input_kwargs
from ..registry import INPUT_MODULES

__all__ = ["build_model", "rebuild_model"]


def build_model(network: str, embedding_size: int, input_module: Optional[str] = None,
                input_kwargs: Optional[Mapping[str, Any]] = None) -> Tuple[torch.nn.Module, Optional[torch.nn.Module]]:
    """``(model, input module)``: the backbone, or the backbone wrapped by a registered input
    module (``model(images) -> embeddings`` either way); the module is ``None`` without one."""
    backbone = build_backbone(network, embedding_size=embedding_size)
    if input_module is None:
        return backbone, None
    module = INPUT_MODULES.build(input_module, **dict(input_kwargs or {}))
    return module.wrap(backbone), module


def rebuild_model(model_path: str, info: Dict[str, Any]) -> torch.nn.Module:
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
