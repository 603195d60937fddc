"""The base class of every head.

A head *describes* its logits and extra loss terms for one call (:meth:`Head.plan` ->
:class:`~lh2face_plugin.layers.contract.HeadPlan`; the contract and the inputs are described in
:mod:`lh2face_plugin.layers.contract`); the layers in :mod:`lh2face_plugin.layers` evaluate that
description, and a head never knows which one runs it.

Three ways to call a head:

- ``head(cosine, labels) -> logits``: arcface_torch's ``margin_loss`` contract (its
  ``PartialFC_V2`` and ``CombinedMarginLoss``), for heads whose logits need only the cosines;
- ``head.evaluate(cosine, labels, *, norms=None, embeddings=None, weights=None,
  class_index=None, ctx=None) -> HeadResult``: dense logits and terms (tests, references);
- through a layer: :func:`lh2face_plugin.layers.dense.dense_head_loss`, the blockwise layer
  and the plugin's Partial FC, which return the loss.

Heads keep their state (running statistics, memories, learned thresholds) in buffers and
parameters (:mod:`.running` for moving averages), and the hyperparameters they were built with
in ``state_dict()``'s extra state (:mod:`.hparams`).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ..distributed import DistContext
from ..layers.contract import (HeadInputs, HeadPlan, HeadResult, Layer, LogitSpec, RowTerm, as_cosine, check_shapes,
                               head_inputs)
from ..layers.dense import evaluate_head, margin_loss_logits
from .hparams import (HyperparameterMismatch, HyperparameterState, check_bool, check_choice, check_int,
                      check_positive, check_range)

__all__ = ["Head", "HeadInputs", "HeadPlan", "HeadResult", "LogitSpec", "RowTerm", "Layer", "HyperparameterMismatch",
           "as_cosine", "check_shapes", "check_range", "check_positive", "check_bool", "check_int", "check_choice"]


class Head(HyperparameterState):
    """Base class: validation, float32, the calls, hyperparameters in the state.

    Subclasses implement :meth:`plan`. ``check_inputs`` (default on) checks
    the label range and finite features; turn it off to skip the small
    reductions and the host sync they cost.

    ``state_hparams`` names the hyperparameters that give the head's state its
    meaning (e.g. LH2Face's kappa bounds for its running mean); loading a state
    made with other values of those, or by another head class, raises
    :class:`~.hparams.HyperparameterMismatch` (``load_state_dict(..., strict=False)`` warns
    instead); other changed hyperparameters give a warning. ``None`` = all.
    """

    needs_norms: bool = False
    needs_embeddings: bool = False
    needs_weights: bool = False

    def __init__(self, check_inputs: bool = True):
        super().__init__()
        self.check_inputs = check_bool("check_inputs", check_inputs)

    # -- the description -------------------------------------------------------------------
    def plan(self, inp: HeadInputs) -> HeadPlan:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement plan(inputs) -> HeadPlan")

    def require_layer(self, layer: Layer) -> None:
        """Raise a one-line error when this head cannot run on ``layer`` (it describes no plan)."""
        if type(self).plan is Head.plan:
            raise TypeError(f"head {type(self).__name__} cannot run on the {Layer(layer).value} layer: it "
                            "implements no plan(inputs) -> HeadPlan, the description every layer of lh2face_plugin "
                            "evaluates")

    def setup_shard(self, num_local: int, embedding_size: int) -> None:
        """Called once by the classifier / Partial FC with this shard's class
        count and the embedding size; heads with per-class state allocate it here."""

    # -- calls -----------------------------------------------------------------------------
    def forward(self, cosine: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """arcface_torch's ``margin_loss(logits, labels) -> logits``: [N, C] cosines of this shard
        (labels -1 off-shard) to [N, C] float32 logits (:func:`~lh2face_plugin.layers.dense.margin_loss_logits`).

        Raises:
            TypeError: the head needs norms, embeddings or class proxies, or adds loss terms,
                which arcface_torch's ``PartialFC_V2`` cannot pass or add.
        """
        return margin_loss_logits(self, cosine, labels)

    def evaluate(
        self,
        cosine: torch.Tensor,
        labels: torch.Tensor,
        *,
        norms: Optional[torch.Tensor] = None,
        embeddings: Optional[torch.Tensor] = None,
        weights: Optional[torch.Tensor] = None,
        class_index: Optional[torch.Tensor] = None,
        ctx: Optional[DistContext] = None,
    ) -> HeadResult:
        """Dense logits and terms of ``cosine`` [N, C] (:func:`~lh2face_plugin.layers.dense.evaluate_head`)."""
        return evaluate_head(self, cosine, labels, norms=norms, embeddings=embeddings, weights=weights,
                             class_index=class_index, ctx=ctx)

    def inputs(self, labels: torch.Tensor, num_classes: int, *, norms=None, embeddings=None, weights=None,
               class_index=None, ctx: Optional[DistContext] = None, cosine: Optional[torch.Tensor] = None,
               target_cosine: Optional[torch.Tensor] = None,
               proxy_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
               check_finite: bool = True) -> HeadInputs:
        """Validate and pack the inputs of one call (see :func:`~lh2face_plugin.layers.contract.head_inputs`)."""
        return head_inputs(self, labels, num_classes, norms=norms, embeddings=embeddings, weights=weights,
                           class_index=class_index, ctx=ctx, cosine=cosine, target_cosine=target_cosine,
                           proxy_fn=proxy_fn, check_finite=check_finite)

