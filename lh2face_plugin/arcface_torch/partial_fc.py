"""Partial FC that calls a plugin head with the full head contract: the third layer.

arcface_torch's ``PartialFC_V2`` hands its margin function only the clamped
cosines of its shard (plugin heads whose logits need only those work there too, as
``margin_loss``: see :meth:`lh2face_plugin.heads.base.Head.forward`).
:class:`PartialFCMixin` holds everything the plugin adds, at module level;
:func:`partial_fc_class` puts it in front of the checkout's own ``PartialFC_V2`` (its
sampling and ``AllGather`` are reused, not rewritten). Its forward

1. all-gathers embeddings and labels across ranks (global batch N = B * W),
2. checks every global label lies in [0, num_classes) or is -1, *before* any
   remapping, and drops -1 rows (ignored samples) on every rank alike,
3. takes the feature norms |z_i| before normalising,
4. samples classes as ``PartialFC_V2.sample`` does when ``sample_rate < 1``,
5. calls the head with ``norms``, ``embeddings``, the (sampled) normalised
   ``weights``, ``class_index=self.weight_index`` when sampling, and
   ``ctx=DistContext(world, rank, gathered=True)``,
6. returns the head's loss, cross-entropy plus terms, from the layer asked for
   (``blockwise=False``: the dense cosines of the host's matmul through
   :func:`~lh2face_plugin.layers.dense.dense_head_loss`; ``blockwise=True``:
   :func:`~lh2face_plugin.layers.blockwise.blockwise_head_loss`),
7. plus the loss terms of the input module of the paired model, if any.

``last_terms`` holds the parts of the last forward, detached, for logs: ``loss``,
``ce``, each weighted term of the head by name (LH2Face: ``pps``, ``pns``,
``pp``; UniTSFace: ``uss``) and its statistics (``mu``, ``b``).

Input-module terms: :meth:`PartialFC.pair_input_model` pairs the loss with the wrapped
backbone (``lh2face_plugin.arcface_torch.activate`` pairs the model ``get_model`` built).
When that model's last training forward left a pending item (see
:class:`~lh2face_plugin.render.module.RenderAugmentedModel`), forward pops it and adds
``model.pending_losses(item, local_embeddings, canon_loss_fn)["total"]``, where
``canon_loss_fn(e)`` is steps 1-6 on the canonical embeddings ``e`` (K rows) with the first
K local labels: ``L_FR^canon`` is this head's loss. K may differ from the batch size
(``canon_fraction < 1``); the constant-batch check covers the recognition batch only. The
item is popped before any term is computed, and the canonical call runs steps 1-6 alone, so
it never adds input-module terms again. The head runs in eval mode for the canonical call,
so stateful heads (LH2Face's running mean, UniTSFace's memory) update on the real faces only.

At construction the head's ``setup_shard(num_local, embedding_size)`` is
called so per-class state (UniTSFace's memory) is sharded like the weight.

The head is stored as the submodule ``margin_softmax`` (the attribute the base
class uses), so the ``state_dict`` arcface_torch saves in its checkpoints holds
the head's buffers and parameters, and resume restores them.

A callable that is not a :class:`~lh2face_plugin.heads.base.Head` (such as the
checkout's ``CombinedMarginLoss``) is called as the base class calls it,
``margin(logits, labels)``, followed by the host's distributed cross-entropy.
"""
from __future__ import annotations

import contextlib
import importlib
import weakref
from types import ModuleType
from typing import Dict, Optional

import torch
from torch import distributed
from torch.nn.functional import linear, normalize

from ..distributed import DistContext
from ..heads.base import Head
from ..export.onnx import eval_mode
from ..labels import check_labels
from ..layers.blockwise import blockwise_head_loss
from ..layers.contract import Layer
from ..layers.dense import dense_head_loss
from ..layers.precision import check_nonfinite, check_product_dtype, no_autocast, product_dtype

__all__ = ["partial_fc_class", "check_global_labels", "PartialFCMixin"]

_CLASSES: Dict[int, tuple] = {}


def check_global_labels(labels: torch.Tensor, num_classes: int, batch_size: int) -> None:
    """Raise ``ValueError`` for a label outside [0, num_classes) other than -1.

    Args:
        labels: [N] int64 all-gathered labels (rank r holds rows r*B .. r*B+B-1).
        num_classes: ``config.num_classes``.
        batch_size: per-rank batch B, used to name the rank and row at fault.
    """
    check_labels(labels, num_classes, allow_ignore=True,
                 describe_row=lambda r: f"global row {r} (rank {r // batch_size}, row {r % batch_size} of its batch)",
                 hint=f"config.num_classes = {num_classes}; -1 marks a sample to ignore; check num_classes "
                      "against your dataset's property file")


def partial_fc_class(host: Optional[ModuleType] = None) -> type:
    """The plugin's ``PartialFC`` class: :class:`PartialFCMixin` on ``host.PartialFC_V2``.

    Args:
        host: the checkout's ``partial_fc_v2`` module (default: import it, so the
            checkout must be on ``sys.path``).

    Returns:
        A subclass of ``PartialFC_V2`` with the same constructor,
        ``PartialFC(margin_loss, embedding_size, num_classes, sample_rate=1.0, fp16=False)``.
    """
    host = host if host is not None else importlib.import_module("partial_fc_v2")
    cached = _CLASSES.get(id(host))
    if cached is not None and cached[0] is host:   # the module itself is kept: a freed module's id can recur
        return cached[1]
    cls = type("PartialFC", (PartialFCMixin, host.PartialFC_V2),
               {"__module__": __name__, "__doc__": PartialFCMixin.__doc__, "_all_gather": staticmethod(host.AllGather)})
    _CLASSES[id(host)] = (host, cls)
    return cls


class PartialFCMixin:
    """``PartialFC_V2`` of the checkout, calling plugin heads with the full head contract.

    Args:
        margin_loss: a plugin head, or any ``f(logits, labels)`` as in arcface_torch.
        embedding_size: D. num_classes: C over all ranks.
        sample_rate: fraction of this shard's classes per step (positives always kept).
        fp16: compute the cosine products in half (float16 on CUDA, bfloat16 on CPU); logits, loss
            and gradients stay float32 (:mod:`lh2face_plugin.layers.precision`). arcface_torch's
            ``train_v2`` passes ``False`` whatever ``config.fp16`` says; the recipe key
            ``config.partial_fc_kwargs = {"fp16": True}`` turns it on. The caller's own autocast
            (``torch.autocast``) also puts the products, and only them, in its dtype.
        blockwise: evaluate the head column block by column block (no [N, C] cosines); ``None``
            (default): blockwise on the CPU, where it measured both faster and leaner than the dense
            layer, dense on CUDA until a GPU has measured it (docs/performance.md).
        block_elements: entries per block of the blockwise layer.
        cache_cosine: the blockwise layer keeps the cosines for the backward.
        matmul_dtype: the products' half dtype (``torch.float16``/``torch.bfloat16`` or its name),
            overriding the device default of ``fp16``; implies half products.
        nonfinite: what a NaN/Inf in the embeddings or class proxies does: ``"raise"`` (every rank
            raises the same one-line ``FloatingPointError`` after one collective) or ``"nan"`` (the
            loss is NaN on every rank, so a GradScaler skips the step and lowers its scale). Default:
            ``"nan"`` with half products, else ``"raise"``; a recipe with ``config.fp16`` gets ``"nan"``.

    Shape:
        local_embeddings [B, D] float, local_labels [B] or [B, 1] int64 (-1 = ignore the row)
        -> scalar float32 loss, the mean over the global batch (identical on every rank).
    """

    blockwise: Optional[bool] = None
    block_elements: Optional[int] = None
    cache_cosine: bool = False
    matmul_dtype: Optional[torch.dtype] = None
    nonfinite: Optional[str] = None

    def __init__(self, margin_loss, embedding_size: int, num_classes: int, sample_rate: float = 1.0,
                 fp16: bool = False, *, blockwise: Optional[bool] = None, block_elements: Optional[int] = None,
                 cache_cosine: Optional[bool] = None, matmul_dtype=None, nonfinite: Optional[str] = None):
        if not callable(margin_loss):
            raise TypeError(f"margin_loss must be callable, got {type(margin_loss).__name__}")
        if not 0.0 < float(sample_rate) <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        super().__init__(margin_loss, embedding_size, num_classes, sample_rate, fp16)
        self.num_classes = int(num_classes)
        if blockwise is not None:
            self.blockwise = bool(blockwise)
        if block_elements is not None:
            self.block_elements = int(block_elements)
        if cache_cosine is not None:
            self.cache_cosine = bool(cache_cosine)
        if matmul_dtype is not None:
            if isinstance(matmul_dtype, str):
                matmul_dtype = getattr(torch, matmul_dtype, matmul_dtype)
            self.matmul_dtype = check_product_dtype(matmul_dtype, "Partial FC matmul_dtype")
        if nonfinite is not None:
            check_nonfinite(nonfinite)
            self.nonfinite = nonfinite
        if isinstance(margin_loss, Head):
            margin_loss.require_layer(Layer.DENSE if self.blockwise is False else Layer.BLOCKWISE)
            margin_loss.setup_shard(self.num_local, embedding_size)
        self._input_model: Optional[weakref.ref] = None
        self.last_terms: Dict[str, torch.Tensor] = {}

    def pair_input_model(self, model: torch.nn.Module) -> None:
        """Add the pending input-module terms of ``model`` to this loss (see the module docstring).

        Args:
            model: the wrapped backbone, with ``pop_pending()`` and
                ``pending_losses(item, input_embedding, canon_loss_fn)``; held by weak reference.
        """
        if not (callable(getattr(model, "pop_pending", None)) and callable(getattr(model, "pending_losses", None))):
            raise TypeError(f"{type(model).__name__} has no pop_pending()/pending_losses(): it keeps no "
                            "input-module loss terms to add")
        self._input_model = weakref.ref(model)

    @property
    def head(self):
        return self.margin_softmax

    def product_dtype(self, embeddings: torch.Tensor) -> Optional[torch.dtype]:
        """The dtype of this step's cosine products: ``matmul_dtype``; else with ``fp16`` float16 on
        CUDA, bfloat16 elsewhere; else the caller's autocast dtype; else ``None`` (float32)."""
        if self.matmul_dtype is not None:
            return self.matmul_dtype
        if self.fp16:
            return torch.float16 if embeddings.is_cuda else torch.bfloat16
        return product_dtype(embeddings.float())

    def nonfinite_policy(self, mm_dtype: Optional[torch.dtype]) -> str:
        """``nonfinite`` as set, else ``"nan"`` when this step's products are in half (``mm_dtype``, from
        :meth:`product_dtype`), else ``"raise"``."""
        if self.nonfinite is not None:
            return self.nonfinite
        return "nan" if mm_dtype is not None else "raise"

    def _gather(self, local_embeddings: torch.Tensor, local_labels: torch.Tensor):
        b = local_embeddings.shape[0]
        emb_parts = [local_embeddings.new_zeros((b, self.embedding_size)) for _ in range(self.world_size)]
        label_parts = [torch.zeros_like(local_labels) for _ in range(self.world_size)]
        embeddings = torch.cat(self._all_gather(local_embeddings, *emb_parts))
        distributed.all_gather(label_parts, local_labels)
        return embeddings, torch.cat(label_parts)

    def forward(self, local_embeddings: torch.Tensor, local_labels: torch.Tensor) -> torch.Tensor:
        local_labels = local_labels.reshape(-1).long()
        if local_embeddings.dim() != 2 or local_embeddings.shape[1] != self.embedding_size:
            raise ValueError(f"embeddings must be [B, {self.embedding_size}] (embedding_size of this Partial FC), "
                             f"got shape {tuple(local_embeddings.shape)}")
        batch_size = local_embeddings.size(0)
        if local_labels.numel() != batch_size:
            raise ValueError(f"got {batch_size} embeddings but {local_labels.numel()} labels")
        if self.last_batch_size == 0:
            self.last_batch_size = batch_size
        if self.last_batch_size != batch_size:
            raise ValueError(f"the batch size must stay constant (Partial FC): first {self.last_batch_size}, "
                             f"now {batch_size}; arcface_torch's loaders use drop_last=True")
        loss, parts = self._head_loss(local_embeddings, local_labels)
        model = self._input_model() if self._input_model is not None else None
        pending = model.pop_pending() if model is not None else None
        if pending is not None:
            terms = model.pending_losses(pending, local_embeddings, canon_loss_fn=self._canonical_loss(local_labels))
            loss = loss + terms["total"]
            parts.update({f"render_{k}": v.detach() for k, v in terms.items()
                          if k != "total" and isinstance(v, torch.Tensor) and v.dim() == 0})
        self.last_terms = {"loss": loss.detach(), "ce": parts.pop("ce"), **parts}
        return loss

    def _canonical_loss(self, local_labels: torch.Tensor):
        """``L_FR^canon``: this head's loss on K canonical embeddings with the first K labels.

        The head runs in eval mode for that call, so its state (LH2Face's running mean,
        UniTSFace's memory and step count) moves once per step, on the real faces only.
        """
        def loss_fn(e: torch.Tensor) -> torch.Tensor:
            head = self.margin_softmax
            with eval_mode(head) if isinstance(head, torch.nn.Module) else contextlib.nullcontext():
                return self._head_loss(e, local_labels[: e.shape[0]])[0]

        return loss_fn

    def _head_loss(self, local_embeddings: torch.Tensor, local_labels: torch.Tensor):
        """Steps 1-6 of the module docstring: [B, D] embeddings, [B] int64 labels -> (scalar loss,
        its detached parts by name)."""
        batch_size = local_embeddings.size(0)
        local_embeddings = local_embeddings.float()
        embeddings, labels = self._gather(local_embeddings, local_labels)
        check_global_labels(labels, self.num_classes, batch_size)
        keep = labels != -1
        if not bool(keep.all()):
            if not bool(keep.any()):
                zero = embeddings.sum() * 0.0
                return zero, {"ce": zero.detach()}
            embeddings, labels = embeddings[keep], labels[keep]

        labels = labels.view(-1, 1)
        index_positive = (self.class_start <= labels) & (labels < self.class_start + self.num_local)
        labels[~index_positive] = -1
        labels[index_positive] -= self.class_start
        head = self.margin_softmax
        ctx = DistContext(self.world_size, self.rank, gathered=True)
        norms = embeddings.norm(dim=1)
        blockwise = self.blockwise if self.blockwise is not None else not embeddings.is_cuda
        mm_dtype = self.product_dtype(embeddings)
        if blockwise and isinstance(head, Head):
            class_index = None
            if self.sample_rate < 1:
                with torch.no_grad():
                    self.sample(labels, index_positive)  # the host's sampling; its weight copy is not used
                class_index = self.weight_index
            return blockwise_head_loss(head, normalize(embeddings), self.weight, labels, norms=norms,
                                       index=class_index, ctx=ctx, block_elements=self.block_elements,
                                       matmul_dtype=mm_dtype, cache_cosine=self.cache_cosine,
                                       nonfinite=self.nonfinite_policy(mm_dtype))
        if self.sample_rate < 1:
            weight = self.sample(labels, index_positive)
            class_index = self.weight_index
        else:
            weight, class_index = self.weight, None
        with no_autocast(embeddings.device):
            x = normalize(embeddings)
            w = normalize(weight)
            logits = linear(x, w) if mm_dtype is None else linear(x.to(mm_dtype), w.to(mm_dtype))
        cosine = logits.float().clamp(-1, 1)
        if isinstance(head, Head):
            return dense_head_loss(head, cosine, labels, norms=norms, embeddings=x.float(), weights=w.float(),
                                   class_index=class_index, ctx=ctx, nonfinite=self.nonfinite_policy(mm_dtype))
        ce = self.dist_cross_entropy(head(cosine, labels), labels)
        return ce, {"ce": ce.detach()}
