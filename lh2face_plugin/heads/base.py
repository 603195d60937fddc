"""The head contract shared by every loss in this package.

A head turns the cosines of one class shard into the logits that enter the
(distributed) softmax cross-entropy, optionally with an extra loss term::

    head(cosine, labels, *, norms=None, embeddings=None, weights=None,
         class_index=None, ctx=None) -> logits | (logits, extra_loss)

Inputs (N rows of the all-gathered batch, C classes of this shard, possibly a
sampled subset, D embedding dims):

- ``cosine``: [N, C] unit cosines <x_i, w_j>; half types are computed in
  float32 (float64 stays float64, for gradcheck).
- ``labels``: [N] or [N, 1] int64, column of the target class on this shard,
  -1 where the class lives on another shard.
- ``norms``: [N] raw feature norms |z_i| (differentiable).
- ``embeddings``: [N, D] normalised embeddings x_i (differentiable).
- ``weights``: [C, D] normalised class proxies w_j (differentiable).
- ``class_index``: [C] int64 local class id of each column when Partial FC
  samples a subset (``None`` = column j is local class j).
- ``ctx``: :class:`~lh2face_plugin.distributed.DistContext`; default: the
  initialised process group, else a world of 1.

Returns ``logits`` [N, C] float32, a new tensor, or ``(logits, extra)`` with a
scalar ``extra`` whose value is global (identical on every rank) and whose
gradient is this rank's part (see :mod:`lh2face_plugin.distributed`).
Heads keep their state (running statistics, memories, learned thresholds) in
buffers and parameters, so ``state_dict()`` resumes them exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch
from torch import nn

from ..distributed import DistContext

__all__ = ["Head", "HeadInputs", "HeadOutput", "check_range", "check_positive"]

HeadOutput = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]


@dataclass
class HeadInputs:
    """Validated inputs of one head call (float32, labels flattened)."""

    cosine: torch.Tensor
    labels: torch.Tensor
    pos: torch.Tensor
    target: torch.Tensor
    norms: Optional[torch.Tensor]
    embeddings: Optional[torch.Tensor]
    weights: Optional[torch.Tensor]
    class_index: Optional[torch.Tensor]
    ctx: DistContext

    @property
    def num_rows(self) -> int:
        return self.cosine.shape[0]


def check_range(name: str, value: float, low: float = None, high: float = None, *, low_open=False) -> float:
    """Validate a hyperparameter; the error names it and what was expected."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if value != value:
        raise ValueError(f"{name} must be a number, got NaN")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


def check_positive(name: str, value: float) -> float:
    return check_range(name, value, 0.0, low_open=True)


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype == torch.float64 else t.float()


class Head(nn.Module):
    """Base class: validation, float32 and the call signature.

    Subclasses implement :meth:`compute`. ``check_inputs`` (default on) checks
    the label range and finite features; turn it off to skip the two small
    reductions and the host sync they cost.
    """

    needs_norms: bool = False
    needs_embeddings: bool = False
    needs_weights: bool = False

    def __init__(self, check_inputs: bool = True):
        super().__init__()
        self.check_inputs = bool(check_inputs)

    def compute(self, inp: HeadInputs) -> HeadOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def setup_shard(self, num_local: int, embedding_size: int) -> None:
        """Called once by the classifier / Partial FC with this shard's class
        count and the embedding size; heads with per-class state allocate it here."""

    def forward(
        self,
        cosine: torch.Tensor,
        labels: torch.Tensor,
        *,
        norms: Optional[torch.Tensor] = None,
        embeddings: Optional[torch.Tensor] = None,
        weights: Optional[torch.Tensor] = None,
        class_index: Optional[torch.Tensor] = None,
        ctx: Optional[DistContext] = None,
    ) -> HeadOutput:
        if cosine.dim() != 2:
            raise ValueError(f"cosine must be [N, C], got shape {tuple(cosine.shape)}")
        n, c = cosine.shape
        labels = labels.reshape(-1)
        if labels.numel() != n:
            raise ValueError(f"labels must have N={n} entries, got shape {tuple(labels.shape)}")
        if labels.is_floating_point():
            raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
        labels = labels.long()
        for name, t, need in (("norms", norms, self.needs_norms), ("embeddings", embeddings, self.needs_embeddings),
                              ("weights", weights, self.needs_weights)):
            if need and t is None:
                raise ValueError(f"{type(self).__name__} needs {name}=...: call it through "
                                 "lh2face_plugin's classifier or Partial FC, which pass them")
        with torch.autocast(device_type=cosine.device.type, enabled=False):
            cosine = _at_least_float32(cosine)
            norms = None if norms is None else _at_least_float32(norms.reshape(-1))
            embeddings = None if embeddings is None else _at_least_float32(embeddings)
            weights = None if weights is None else _at_least_float32(weights)
            if self.check_inputs:
                self._check(cosine, labels, norms, embeddings)
            pos = torch.nonzero(labels >= 0).reshape(-1)
            inp = HeadInputs(cosine, labels, pos, labels[pos], norms, embeddings, weights, class_index,
                             ctx if ctx is not None else DistContext.current())
            return self.compute(inp)

    @staticmethod
    def _check(cosine, labels, norms, embeddings) -> None:
        c = cosine.shape[1]
        bad = (labels < -1) | (labels >= c)
        if bool(bad.any()):
            row = int(torch.nonzero(bad)[0])
            raise ValueError(
                f"label out of range at row {row}: {int(labels[row])} (this shard has {c} classes; "
                f"labels must be in [0, {c}) or -1 for a class on another shard). Check num_classes "
                "against your dataset: an out-of-range label otherwise shows up as a loss stuck at 69.08."
            )
        probe = norms if norms is not None else (embeddings if embeddings is not None else cosine)
        if not bool(torch.isfinite(probe).all()):
            bad_rows = (~torch.isfinite(probe.reshape(probe.shape[0], -1))).any(1)
            row = int(torch.nonzero(bad_rows)[0])
            raise FloatingPointError(
                f"non-finite features at row {row} (NaN/Inf in the backbone output). Typical causes: "
                "fp16 overflow without a GradScaler, a learning rate too high. "
                "Disable this check with check_inputs=False."
            )

    def hparams(self) -> dict:
        """The hyperparameters this head was built with (for logs and ``lh2face heads``)."""
        return dict(getattr(self, "_hparams", {}))

    def _record(self, **hp) -> None:
        self._hparams = {**getattr(self, "_hparams", {}), **hp}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.hparams().items())
