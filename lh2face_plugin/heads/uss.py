"""UniTSFace's unified-threshold sample-to-sample (USS) loss (Li et al., NeurIPS 2023, arXiv 2311.02523).

    L_uss = log(1 + e^{-gamma (g_pos - m) + b}) + sum_{j != y} log(1 + e^{gamma g_neg_j - b})

``g`` is the cosine between a sample and a stored feature. Pairs come from a
memory of one row per class holding the latest (detached) feature of that
class: the positive is the row of the sample's class, the negatives are the
other filled rows. ``b = gamma * t`` is one learnable threshold, initialised
as the batch mean of ``logsumexp_j gamma g_neg_j`` at the first USS step;
softplus arguments are clamped to [-gamma, gamma]. UniTSFace adds USS to a
sample-to-class loss (CosFace s=64, m=0.4 by default) and trains the latter
alone during a warm-up so the memory fills.

Under Partial FC the memory is sharded like the FC weight ([C_local, D] per
rank), logits against it use the all-gathered batch, ``b``'s gradient is
summed over ranks and its initial value uses a distributed logsumexp. The
memory is written after the step: the rows of a batch are applied at the
start of the next call (or when the state is saved), so backward always sees
the memory its forward used.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import DistContext, all_gather_rows, all_reduce_grad, global_mean_stat, global_sum, reduce_target
from ..layers.contract import HeadInputs, HeadPlan, RowTerm
from ..layers.products import matmul_logsumexp
from ..registry import HEADS, register_head
from .base import Head
from .hparams import check_choice, check_int, check_positive, check_range

__all__ = ["USS"]


@register_head("uss")
class USS(Head):
    """USS loss on a sharded class memory, added to a sample-to-class head.

    Args:
        num_classes: memory rows (classes on this shard); may instead be set
            by :meth:`setup_shard`, which Partial FC and the classifier call.
        embedding_size: D; ``None`` = taken from :meth:`setup_shard`.
        gamma: scale (64). m: positive margin (0.1).
        warmup_steps: calls with the sample-to-class loss only (memory still fills).
        lambda_uss: weight of the USS term.
        base: registered name of the sample-to-class head ("cosface").
        base_kwargs: its parameters (default CosFace s=64, m=0.4).
        init_b: fixed initial b instead of the logsumexp initialisation.
        negatives: ``"memory"`` (the paper: every filled memory row of the call's
            classes, a second [N, C] product) or ``"batch"`` (ours, cheaper: the memory
            rows of the batch's own classes, gathered over shards, a [P, U] product
            with U <= N distinct classes).
        check_inputs: validate labels and features on every call.

    Shape:
        cosine [N, C], labels [N], embeddings [N, D] (required)
        -> :class:`~.base.HeadResult`: the base head's logits [N, C] and terms, term ``uss``, stat ``b``.
    """

    needs_embeddings = True
    state_hparams = ("gamma", "base", "embedding_size")

    def __init__(self, num_classes: Optional[int] = None, embedding_size: Optional[int] = None, gamma: float = 64.0,
                 m: float = 0.1, warmup_steps: int = 0, lambda_uss: float = 1.0, base: str = "cosface",
                 base_kwargs: Optional[Dict[str, Any]] = None, init_b: Optional[float] = None,
                 negatives: str = "memory", check_inputs: bool = True):
        super().__init__(check_inputs)
        self.gamma = check_positive("gamma", gamma)
        self.m = check_range("m", m, 0.0, 1.0)
        self.warmup_steps = check_int("warmup_steps", warmup_steps, 0)
        self.lambda_uss = check_range("lambda_uss", lambda_uss, 0.0)
        if base == "uss":
            raise ValueError("base must be a sample-to-class head, not 'uss'")
        kw = dict(base_kwargs or {})
        kw.setdefault("check_inputs", False)
        self.base = HEADS.build(base, **kw)
        for flag in ("needs_norms", "needs_weights"):
            setattr(self, flag, getattr(self.base, flag))
        self.embedding_size = None if embedding_size is None else check_int("embedding_size", embedding_size, 1)
        if num_classes is not None:
            num_classes = check_int("num_classes", num_classes, 1)
        if init_b is not None:
            init_b = check_range("init_b", init_b)
        self.negatives = check_choice("negatives", negatives, ("memory", "batch"))
        self.register_buffer("memory", torch.zeros(0, self.embedding_size or 0))
        self.register_buffer("filled", torch.zeros(0, dtype=torch.bool))
        self.register_buffer("steps", torch.tensor(0, dtype=torch.long))
        self.register_buffer("b_initialized", torch.tensor(init_b is not None))
        self.b = nn.Parameter(torch.tensor(float(init_b) if init_b is not None else 0.0))
        self._pending = None
        if num_classes is not None:
            if self.embedding_size is None:
                raise ValueError("uss: embedding_size is required when num_classes is given")
            self.setup_shard(num_classes, self.embedding_size)
        self._record(num_classes=num_classes, embedding_size=self.embedding_size, gamma=self.gamma, m=self.m,
                     warmup_steps=self.warmup_steps, lambda_uss=self.lambda_uss, base=base, base_kwargs=kw,
                     init_b=init_b, negatives=self.negatives)

    def setup_shard(self, num_local: int, embedding_size: int) -> None:
        """Allocate the memory for ``num_local`` classes of dimension ``embedding_size``."""
        if self.embedding_size is None:
            self.embedding_size = int(embedding_size)
        elif embedding_size != self.embedding_size:
            raise ValueError(f"embedding_size mismatch: head has {self.embedding_size}, shard has {embedding_size}")
        device = self.memory.device
        self.memory = torch.zeros(int(num_local), self.embedding_size, device=device)
        self.filled = torch.zeros(int(num_local), dtype=torch.bool, device=device)

    @torch.no_grad()
    def flush(self) -> None:
        """Write the features of the last training call into the memory."""
        if self._pending is None:
            return
        cls, feats = self._pending
        self._pending = None
        ok = torch.isfinite(feats).all(dim=1)   # a NaN step (skipped by a GradScaler) leaves the memory as it was
        self.memory[cls] = torch.where(ok[:, None], feats.to(self.memory.dtype), self.memory[cls])
        self.filled[cls] = self.filled[cls] | ok

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        self.flush()
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def plan(self, inp: HeadInputs) -> HeadPlan:
        if self.memory.shape[0] == 0:
            raise RuntimeError("USS memory is not allocated: pass num_classes= or call setup_shard(num_local, dim)")
        self.flush()
        plan = self.base.plan(inp)
        local_cls = inp.local_classes(inp.target)
        if local_cls.numel() and int(local_cls.max()) >= self.memory.shape[0]:
            raise ValueError(f"class {int(local_cls.max())} beyond the USS memory ({self.memory.shape[0]} rows)")

        if int(self.steps) >= self.warmup_steps and self.lambda_uss > 0:
            self._uss(inp, local_cls, plan)
        if self.training and inp.num_rows:
            self.steps += 1
            self._remember(local_cls, inp.embeddings[inp.pos].detach())
        plan.stats["b"] = self.b.detach().clone()
        return plan

    def _remember(self, cls: torch.Tensor, feats: torch.Tensor) -> None:
        if cls.numel() == 0:
            return
        order = torch.arange(cls.numel(), device=cls.device)
        uniq, inverse = torch.unique(cls, return_inverse=True)
        last = torch.full_like(uniq, -1).scatter_reduce(0, inverse, order, reduce="amax")
        self._pending = (uniq, feats[last])

    def _uss(self, inp: HeadInputs, local_cls: torch.Tensor, plan: HeadPlan) -> None:
        """Add L_uss to ``plan`` as the term ``uss``: the positive pairs as a ready part; the memory
        negatives as a row part over the memory's columns, which the layer evaluates in its column
        pass, or (``negatives="batch"``) the batch's memory rows as a small local product."""
        ctx, n, x = inp.ctx, max(1, inp.num_rows), inp.embeddings
        mem = self.memory.to(x.dtype)
        gamma, m = self.gamma, self.m
        if self.negatives == "batch":
            rows, emb, own, filled, _ = self._batch_negatives(inp, local_cls, mem)
            if not bool(self.b_initialized):
                self._init_b(emb, rows, None, own, filled, ctx, rows_split=True)
        else:
            filled = self.filled if inp.class_index is None else self.filled[inp.class_index]
            exclude = torch.full((inp.num_rows,), -1, dtype=torch.long, device=x.device)
            exclude[inp.pos] = inp.target
            if not bool(self.b_initialized):
                self._init_b(x, mem, inp.class_index, exclude, filled, ctx, rows_split=False)
        b = all_reduce_grad(self.b, ctx)

        def neg_fn(g, bb):
            return F.softplus((gamma * g - bb).clamp(-gamma, gamma))

        gt = (x[inp.pos] * mem[local_cls]).sum(dim=1)
        total = (F.softplus((-gamma * (gt - m) + b).clamp(-gamma, gamma)) * self.filled[local_cls]).sum()
        if self.negatives == "batch":
            y = neg_fn(emb @ rows.t(), b) * filled[None, :].to(x.dtype)
            total = total + y.index_put((torch.arange(own.numel(), device=x.device), own), y.new_zeros(own.numel())).sum()
        else:
            plan.row_terms["uss"] = RowTerm(neg_fn, self.lambda_uss, col_mask=filled, args=(b,), columns=self.memory)
        plan.terms["uss"] = self.lambda_uss * global_sum(total, ctx) / n

    def _batch_negatives(self, inp: HeadInputs, local_cls: torch.Tensor, mem: torch.Tensor):
        """The memory rows of the batch's classes, gathered over shards in rank order, for the
        rows whose target is on this shard: (rows [U, D], those rows' embeddings [P, D],
        each row's own column [P], filled [U], None)."""
        ctx = inp.ctx
        uniq, inverse = torch.unique(local_cls, return_inverse=True)
        rows = all_gather_rows(mem[uniq], ctx)
        filled = all_gather_rows(self.filled[uniq].to(mem.dtype), ctx) > 0.5
        sizes = all_gather_rows(torch.tensor([uniq.numel()], device=mem.device), ctx)
        start = int(sizes[: ctx.rank].sum()) if ctx.sharded else 0
        return rows, inp.embeddings[inp.pos], start + inverse, filled, None

    @torch.no_grad()
    def _init_b(self, rows, cols, index, exclude, filled, ctx, rows_split: bool) -> None:
        """b = the mean over rows of logsumexp_j gamma * g_neg_j. ``rows_split``: each shard holds
        its own rows and every column (batch negatives), else every shard the same rows and its
        own columns."""
        lse = matmul_logsumexp(rows, cols, self.gamma, index=index, exclude=exclude, col_mask=filled,
                               ctx=DistContext.single() if rows_split else ctx)
        ok = torch.isfinite(lse)
        if rows_split:
            both = reduce_target(torch.stack([lse[ok].sum(), ok.sum().to(lse.dtype)]), ctx)
            if float(both[1]) == 0:
                return
            value = both[0] / both[1]
        else:
            if not bool(ok.any()):
                return
            value = global_mean_stat(lse[ok].sum(), ok.sum(), ctx)
        self.b.fill_(float(value))
        self.b_initialized.fill_(True)
