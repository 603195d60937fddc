"""The settings of one training run (:class:`TrainConfig`)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, Union

import torch

from ..compact import available_backbones
from .clipping import parse_clip

__all__ = ["TrainConfig"]


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
