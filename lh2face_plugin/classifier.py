"""Single-process normalised FC classifier that calls any registered head.

For one GPU or CPU training and for tests; multi-GPU training goes through
arcface_torch's Partial FC (:mod:`lh2face_plugin.arcface_torch.partial_fc`),
which calls heads with exactly the same contract.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import DistContext
from .registry import HEADS

__all__ = ["NormalizedClassifier", "check_labels"]


def check_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Flatten labels to int64 [N] and check they lie in [0, num_classes).

    Raises:
        ValueError naming the first offending row and its value.
    """
    labels = labels.reshape(-1)
    if labels.is_floating_point():
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    labels = labels.long()
    bad = (labels < 0) | (labels >= num_classes)
    if bool(bad.any()):
        row = int(torch.nonzero(bad)[0])
        raise ValueError(
            f"label out of range at row {row}: {int(labels[row])} (expected 0 <= label < num_classes={num_classes}); "
            "an out-of-range label would otherwise train as a loss stuck at 69.08"
        )
    return labels


class NormalizedClassifier(nn.Module):
    """Class proxies W [C, D] + a head + softmax cross-entropy.

    Args:
        head: a head module or a registered name.
        embedding_size: D.
        num_classes: C.
        head_kwargs: parameters when ``head`` is a name.
        ctx: distributed context; default: the process group if any, in data
            parallel mode (each rank its own rows, all classes).

    Call:
        ``loss = clf(embeddings [N, D], labels [N])``: a scalar, cross-entropy
        of the head's logits plus its extra term. ``clf.last`` holds the parts
        (``ce``, ``extra``, ``accuracy``) of the last call, detached.
    """

    def __init__(self, head: Union[str, nn.Module], embedding_size: int, num_classes: int,
                 head_kwargs: Optional[Mapping[str, Any]] = None, ctx: Optional[DistContext] = None):
        super().__init__()
        if isinstance(head, str):
            head = HEADS.build(head, **dict(head_kwargs or {}))
        elif head_kwargs:
            raise ValueError("head_kwargs is only used when head is given by name")
        self.head = head
        self.embedding_size, self.num_classes = int(embedding_size), int(num_classes)
        self.weight = nn.Parameter(torch.normal(0.0, 0.01, (self.num_classes, self.embedding_size)))
        self.head.setup_shard(self.num_classes, self.embedding_size)
        self.ctx = ctx
        self.last: Dict[str, torch.Tensor] = {}

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """[N, D] -> [N, C] cosines to the class proxies (float32)."""
        return F.linear(F.normalize(embeddings.float()), F.normalize(self.weight.float())).clamp(-1.0, 1.0)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = check_labels(labels, self.num_classes)
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            z = embeddings.float()
            norms = z.norm(dim=1)
            x = F.normalize(z)
            w = F.normalize(self.weight.float())
            cos = F.linear(x, w).clamp(-1.0, 1.0)
            ctx = self.ctx if self.ctx is not None else DistContext.current(gathered=False)
            out = self.head(cos, labels, norms=norms, embeddings=x, weights=w, ctx=ctx)
            logits, extra = out if isinstance(out, tuple) else (out, None)
            ce = F.cross_entropy(logits, labels)
            loss = ce if extra is None else ce + extra
        with torch.no_grad():
            acc = (cos.argmax(dim=1) == labels).float().mean()
        self.last = {"ce": ce.detach(), "extra": (extra if extra is not None else ce.new_zeros(())).detach(),
                     "accuracy": acc}
        return loss
