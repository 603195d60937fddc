"""Running statistics of a head: one helper for every stateful head.

LH2Face's mean concentration and norm statistics, AdaFace's norm statistics and
CurricularFace's ``t`` are exponential moving averages of a batch statistic::

    r <- (1 - momentum) r + momentum * batch value          (training mode, non-empty, finite batch)

started either by the first batch (``first_batch=True``) or from the buffer's initial value.
The batch value is global: over the all-gathered rows under Partial FC (every rank holds the
same rows), all-reduced over ranks in data parallel (:func:`~lh2face_plugin.distributed.batch_total`).
The values live in the head's buffers (so ``state_dict`` saves them, and the head's
hyperparameters record the momentum); evaluation mode reads them without a change.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import nn

from ..distributed import DistContext, batch_total

__all__ = ["RunningStat"]


@dataclass
class RunningStat:
    """The mean (and optionally the unbiased standard deviation) of some per-row values.

    Attributes:
        owner: the head holding the buffers.
        mean: buffer name of the running mean (created at 0 if missing).
        std: buffer name of the running standard deviation (created at 1), or ``None``.
        count: buffer name of the number of updates (shared by a head's statistics; the
            statistic with ``counts=True`` increments it), or ``None``.
        momentum: update rate.
        first_batch: the first update copies the batch value instead of averaging.
        min_rows: smallest batch that updates (2 with a standard deviation).
        counts: this statistic increments ``count``.
    """

    owner: nn.Module
    mean: str
    std: Optional[str] = None
    count: Optional[str] = "num_batches_tracked"
    momentum: float = 0.01
    first_batch: bool = True
    min_rows: int = 1
    counts: bool = True

    def __post_init__(self) -> None:
        for name, value in ((self.mean, 0.0), (self.std, 1.0)):
            if name is not None and not hasattr(self.owner, name):
                self.owner.register_buffer(name, torch.tensor(value))
        if self.count is not None and not hasattr(self.owner, self.count):
            self.owner.register_buffer(self.count, torch.tensor(0, dtype=torch.long))

    @property
    def tracked(self) -> bool:
        """An update has happened (always true without ``first_batch``: the start value counts)."""
        return not self.first_batch or (self.count is not None and int(getattr(self.owner, self.count)) > 0)

    def running(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        mean = getattr(self.owner, self.mean).clone()
        return mean, (getattr(self.owner, self.std).clone() if self.std is not None else None)

    @torch.no_grad()
    def __call__(self, values: torch.Tensor, ctx: DistContext, training: Optional[bool] = None):
        """Update with ``values`` [M] (training mode) and return the statistics this call uses.

        Returns:
            ``(mean, std)`` (``std`` ``None`` without one): the running values once tracked,
            else the batch's own (``None`` where the batch is too small to have it; the
            first update of a ``first_batch`` statistic that does not count reads the batch's).
        """
        training = self.owner.training if training is None else training
        v = values.detach().double().reshape(-1)
        total = batch_total(torch.stack([v.sum(), (v * v).sum(), v.new_tensor(float(v.numel()))]), ctx)
        s1, s2, n = total.unbind()
        batch_mean = s1 / n if float(n) > 0 else None
        batch_std = None
        if self.std is not None and float(n) >= 2:
            batch_std = ((s2 - s1 * batch_mean) / (n - 1)).clamp_min(0.0).sqrt()
        if training and float(n) >= max(1, self.min_rows):
            first = not self.tracked
            values_in = [(name, value) for name, value in ((self.mean, batch_mean), (self.std, batch_std))
                         if name is not None and value is not None]
            finite = torch.stack([torch.isfinite(value) for _, value in values_in]).all()
            for name, value in values_in:   # a NaN batch (a step a GradScaler skips) changes nothing
                buf = getattr(self.owner, name)
                new = value.to(buf.dtype) if first else torch.lerp(buf, value.to(buf.dtype), self.momentum)
                buf.copy_(torch.where(finite, new, buf))
            if self.counts and self.count is not None:
                getattr(self.owner, self.count).add_(finite.long())
        mean, std = self.running() if self.tracked else (batch_mean, batch_std)
        dtype = values.dtype
        return (None if mean is None else mean.to(dtype)), (None if std is None else std.to(dtype))
