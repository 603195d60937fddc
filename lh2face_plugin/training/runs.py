"""A run's folder: its ``train.json`` and ``model.pt``, read back (:func:`trained_info`,
:func:`load_trained_model`), checked whole before reuse (:func:`is_whole`), and what :func:`train_model` returns
(:class:`TrainResult`)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch

from ..fileio import open_regular, sha256_file
from .model import rebuild_model

__all__ = ["TrainResult", "read_info", "load_run", "trained_info", "load_trained_model", "is_whole", "check_out_dir"]


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


def read_info(out_dir: str) -> Optional[Dict[str, Any]]:
    path = os.path.join(out_dir, "train.json")
    try:
        with open_regular(path, "a train.json", text=True) as fh:
            info = json.load(fh)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("format") == "lh2face-train" else None


def load_run(out_dir: str, info: Dict[str, Any]) -> TrainResult:
    model_path = os.path.join(out_dir, "model.pt")
    return TrainResult(rebuild_model(model_path, info), model_path, info, True)


def trained_info(model_path: str) -> Optional[Dict[str, Any]]:
    """The ``train.json`` beside ``model_path`` when :func:`train_model` wrote both, else ``None``."""
    return read_info(os.path.dirname(os.path.abspath(model_path)))


def load_trained_model(model_path: str) -> torch.nn.Module:
    """Reload a ``model.pt`` written by :func:`train_model` through :func:`build_model` (the backbone,
    or the wrapped model of a run with an input module such as ``@render``), in eval mode.

    Raises:
        FileNotFoundError: no ``train.json`` of :func:`train_model` beside ``model_path``.
        ValueError: ``model_path`` is not the model that ``train.json`` records (other bytes).
    """
    info = trained_info(model_path)
    if info is None:
        raise FileNotFoundError(f"{model_path}: no train.json of lh2face's training loop beside it")
    if info.get("model_sha256") and info["model_sha256"] != sha256_file(model_path):
        raise ValueError(f"{model_path} is not the model its train.json records (changed since training)")
    return rebuild_model(model_path, info)


def is_whole(out_dir: str, info: Optional[Dict[str, Any]], key: str) -> bool:
    """A finished run with this key whose model file is the one it recorded (not cut short)."""
    path = os.path.join(out_dir, "model.pt")
    return (info is not None and info.get("key") == key and os.path.exists(path)
            and info.get("model_sha256") == sha256_file(path))


def check_out_dir(out_dir: str) -> Optional[Dict[str, Any]]:
    """The folder's earlier run (or None); refuses a folder holding a model this code did not write."""
    info = read_info(out_dir)
    if info is None and os.path.exists(os.path.join(out_dir, "model.pt")):
        record = os.path.join(out_dir, "train.json")
        why = "its train.json is damaged or not lh2face's" if os.path.exists(record) else "no train.json"
        raise FileExistsError(f"{out_dir} holds a model.pt that lh2face did not train ({why}); "
                              "move it away or choose another output folder")
    return info
