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
from .labels import check_labels
from .layers.dense import dense_head_loss
from .registry import HEADS

__all__ = ["NormalizedClassifier", "check_labels"]


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
        of the head's logits plus its terms. ``clf.last`` holds the parts of the
        last call, detached: ``loss``, ``ce``, ``extra`` (sum of the terms),
        ``accuracy``, and each term and statistic of the head by name.
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
        if embeddings.dim() != 2 or embeddings.shape[0] != labels.numel():
            raise ValueError(f"embeddings must be [N, {self.embedding_size}] with N = {labels.numel()} labels, "
                             f"got shape {tuple(embeddings.shape)}")
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            z = embeddings.float()
            norms = z.norm(dim=1)
            x = F.normalize(z)
            w = F.normalize(self.weight.float())
            cos = F.linear(x, w).clamp(-1.0, 1.0)
            ctx = self.ctx if self.ctx is not None else DistContext.current(gathered=False)
            loss, parts = dense_head_loss(self.head, cos, labels, norms=norms, embeddings=x, weights=w, ctx=ctx)
        with torch.no_grad():
            acc = (cos.argmax(dim=1) == labels).float().mean() if labels.numel() else loss.new_zeros(())
        self.last = {**parts, "loss": loss.detach(), "extra": (loss - parts["ce"]).detach(), "accuracy": acc}
        return loss
