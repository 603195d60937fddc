"""The contract between heads and layers: what a head describes, what a layer evaluates.

A head *describes* how its logits follow from the cosines of one class shard, and which
extra loss terms it adds (``Head.plan(inputs) -> HeadPlan``); the layers in
:mod:`lh2face_plugin.layers` evaluate that description. Every head's logits have the form::

    out_ij = k_i c_ij + [c_ij > t_i] (a c_ij + q c_ij^2 + b)     j != y_i
    out_iy = psi(c_iy, *psi_args)                                 the target

(:class:`LogitSpec`). Extra terms come by name: ready scalars (``terms``) and row terms
(:class:`RowTerm`: ``sum_{j != y_i} fn(g_ij)`` over the cosines or over the products with
another per-class matrix), which the layer evaluates in the same column pass as the logits.

Inputs (N rows of the all-gathered batch, C classes of this shard, possibly a
sampled subset, D embedding dims), validated once by :func:`head_inputs`:

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

Terms are weighted scalars whose value is global (identical on every rank) and
whose gradient is this rank's part (see :mod:`lh2face_plugin.distributed`); the
loss is ``cross_entropy + sum(terms)``.

This module imports no head and no layer: both import it.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Protocol, Tuple, Union

import torch

from ..distributed import DistContext
from ..finite import finite_problem, raise_nonfinite
from ..labels import check_labels

__all__ = ["Layer", "Planner", "LogitSpec", "RowTerm", "HeadPlan", "HeadResult", "HeadInputs", "as_cosine",
           "check_shapes", "at_least_float32", "head_inputs"]


class Layer(enum.Enum):
    """The layers that evaluate a :class:`HeadPlan` (``Head.require_layer(Layer.DENSE)``)."""

    DENSE = "dense"
    BLOCKWISE = "blockwise"


# ----------------------------------------------------------------------------- descriptions

def _identity_target(c: torch.Tensor) -> torch.Tensor:
    return c


@dataclass
class LogitSpec:
    """How logits follow from cosines (see the module docstring).

    Attributes:
        psi: target function ``psi(c_t, *psi_args) -> [P]``, differentiable.
        psi_args: [P]-shaped (or broadcastable) tensors ``psi`` depends on.
        scale: ``k``: a float or an [N] tensor (differentiable).
        thresh: ``t``: optional [N] tensor; non-target entries above it are
            "hard" and get ``a c + q c^2 + b`` added. Not differentiated.
        hard_a, hard_q, hard_b: the bonus of hard negatives (floats).
    """

    psi: Callable[..., torch.Tensor] = _identity_target
    psi_args: Tuple[torch.Tensor, ...] = ()
    scale: Union[float, torch.Tensor] = 1.0
    thresh: Optional[torch.Tensor] = None
    hard_a: float = 0.0
    hard_q: float = 0.0
    hard_b: float = 0.0

    def target_logits(self, target_cosine: torch.Tensor) -> torch.Tensor:
        """``psi`` on the [P] target cosines."""
        return self.psi(target_cosine, *self.psi_args)


@dataclass
class RowTerm:
    """``weight / N * sum_i sum_{j != y_i, col_mask_j} fn(g_ij, *args)``, summed over class shards.

    ``g`` is the cosine matrix, or with ``columns`` the products ``<x_i, m_j>`` of the
    normalised embeddings with the rows of another per-class matrix (UniTSFace's memory),
    taken through the call's ``class_index``. The layer differentiates ``fn`` itself.

    Attributes:
        fn: elementwise differentiable function of a block and ``args``.
        weight: the term's weight (lambda).
        col_mask: optional [C] bool over the call's columns; False columns are left out.
        args: tensors ``fn`` depends on (differentiable, e.g. a learned threshold).
        columns: optional [C_local, D] matrix (not differentiated).
    """

    fn: Callable[..., torch.Tensor]
    weight: float = 1.0
    col_mask: Optional[torch.Tensor] = None
    args: Tuple[torch.Tensor, ...] = ()
    columns: Optional[torch.Tensor] = None


@dataclass
class HeadPlan:
    """A head's description of one call: logits, extra terms, statistics.

    Attributes:
        logits: the :class:`LogitSpec`.
        terms: weighted scalar loss terms by name, ready (value global over shards).
        row_terms: weighted terms over the cosine matrix, evaluated by the layer.
        stats: detached scalars for logs (e.g. LH2Face's ``mu``), not part of the loss.
    """

    logits: LogitSpec
    terms: Dict[str, torch.Tensor] = field(default_factory=dict)
    row_terms: Dict[str, RowTerm] = field(default_factory=dict)
    stats: Dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class HeadResult:
    """What a dense head call returns.

    Attributes:
        logits: [N, C] float32 (float64 for float64 inputs), a new tensor.
        terms: weighted scalar loss terms by name (the row terms evaluated).
        stats: detached scalars for logs.
    """

    logits: torch.Tensor
    terms: Dict[str, torch.Tensor] = field(default_factory=dict)
    stats: Dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def extra(self) -> Optional[torch.Tensor]:
        """Sum of the terms, or ``None`` without terms."""
        if not self.terms:
            return None
        values = list(self.terms.values())
        total = values[0]
        for v in values[1:]:
            total = total + v
        return total

    def log_values(self) -> Dict[str, torch.Tensor]:
        """Terms and statistics, detached, for logs."""
        return {**{k: v.detach() for k, v in self.terms.items()}, **{k: v.detach() for k, v in self.stats.items()}}


@dataclass
class HeadInputs:
    """Validated inputs of one head call (float32 or float64, labels flattened).

    A head reads the cosines of its targets (``target_cosine``) and describes everything
    else over the cosine matrix in its :class:`HeadPlan`; it never sees the matrix itself.
    """

    labels: torch.Tensor
    pos: torch.Tensor
    target: torch.Tensor
    target_cosine: torch.Tensor
    num_classes: int
    norms: Optional[torch.Tensor]
    embeddings: Optional[torch.Tensor]
    weights: Optional[torch.Tensor]
    class_index: Optional[torch.Tensor]
    ctx: DistContext
    proxy_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None

    def proxies(self, cols: torch.Tensor) -> torch.Tensor:
        """The normalised proxies [len(cols), D] of some columns (differentiable), without
        the whole [C, D] matrix where the layer can avoid it."""
        if self.proxy_fn is not None:
            return self.proxy_fn(cols)
        if self.weights is None:
            raise ValueError("this call carries no class proxies: pass weights=...")
        return self.weights[cols]

    def local_classes(self, cols: torch.Tensor) -> torch.Tensor:
        """This shard's class ids of some columns (through ``class_index`` when sampling)."""
        return cols if self.class_index is None else self.class_index[cols]

    @property
    def num_rows(self) -> int:
        return self.labels.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.target_cosine.dtype

    @property
    def device(self) -> torch.device:
        return self.target_cosine.device

    def zero(self) -> torch.Tensor:
        return torch.zeros((), dtype=self.dtype, device=self.device)


class Planner(Protocol):
    """What a layer needs of a head (:class:`~lh2face_plugin.heads.base.Head` is one)."""

    needs_norms: bool
    needs_embeddings: bool
    needs_weights: bool
    check_inputs: bool

    def plan(self, inp: HeadInputs) -> HeadPlan: ...

    def inputs(self, labels: torch.Tensor, num_classes: int, **kwargs) -> HeadInputs: ...

    def require_layer(self, layer: Layer) -> None: ...


# ----------------------------------------------------------------------------- validation

def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype == torch.float64 else t.float()


def as_cosine(cosine: torch.Tensor) -> torch.Tensor:
    """A dense [N, C] cosine matrix in float32 (float64 kept)."""
    if not isinstance(cosine, torch.Tensor) or cosine.dim() != 2:
        raise ValueError(f"cosine must be an [N, C] tensor, got shape {tuple(getattr(cosine, 'shape', ()))}")
    return at_least_float32(cosine)


def check_shapes(n: int, num_classes: int, *, norms=None, embeddings=None, weights=None, class_index=None) -> None:
    """One shape check for every head input: norms [N], embeddings [N, D], weights [C, D] and
    class_index [C] for N rows (labels) and C columns.

    Raises:
        ValueError: naming the input, its shape and the expected one.
    """
    dims = {}
    for name, t, want in (("norms", norms, ("N",)), ("embeddings", embeddings, ("N", "D")),
                          ("weights", weights, ("C", "D")), ("class_index", class_index, ("C",))):
        if t is None:
            continue
        shape = tuple(t.shape) if name != "norms" or t.dim() != 2 or t.shape[1] != 1 else (t.shape[0],)
        expected = {"N": n, "C": num_classes, **dims}
        ok = len(shape) == len(want) and all(expected.get(k, shape[i]) == shape[i] for i, k in enumerate(want))
        if not ok:
            text = ", ".join(f"{k}={expected[k]}" if k in expected else k for k in want)
            raise ValueError(f"{name} must have shape [{text}] (N rows, C columns of this call), got {list(shape)}")
        if "D" in want:
            dims["D"] = shape[want.index("D")]


def head_inputs(head: Planner, labels: torch.Tensor, num_classes: int, *, norms=None, embeddings=None,
                weights=None, class_index=None, ctx: Optional[DistContext] = None,
                cosine: Optional[torch.Tensor] = None, target_cosine: Optional[torch.Tensor] = None,
                proxy_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                check_finite: bool = True) -> HeadInputs:
    """Validate and pack the inputs of one call of ``head`` (``Head.inputs``).

    Exactly one of ``cosine`` (dense [N, C]) and ``target_cosine`` ([P], the cosines of the rows
    whose label is >= 0, in row order) is given; ``proxy_fn(cols)`` gives normalised proxies of some
    columns (see :meth:`HeadInputs.proxies`). ``check_finite=False`` leaves NaN/Inf to the loss (a
    GradScaler then skips the step); else, with ``check_inputs``, a NaN/Inf raises the same
    ``FloatingPointError`` on every rank.

    Raises:
        ValueError: an input of the wrong shape (naming it, its shape and the expected one),
            a missing input the head needs, a label out of range.
    """
    labels = labels.reshape(-1)
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    labels = labels.long()
    n = labels.numel()
    if cosine is not None and n != cosine.shape[0]:
        raise ValueError(f"labels must have N={cosine.shape[0]} entries, got shape {tuple(labels.shape)}")
    for name, t, need in (("norms", norms, head.needs_norms), ("embeddings", embeddings, head.needs_embeddings),
                          ("weights", weights, head.needs_weights)):
        if need and t is None:
            raise ValueError(f"{type(head).__name__} needs {name}=...: call it through "
                             "lh2face_plugin's classifier or Partial FC, which pass them")
    check_shapes(n, num_classes, norms=norms, embeddings=embeddings, weights=weights, class_index=class_index)
    norms = None if norms is None else at_least_float32(norms.reshape(-1))
    embeddings = None if embeddings is None else at_least_float32(embeddings)
    weights = None if weights is None else at_least_float32(weights)
    ctx = ctx if ctx is not None else DistContext.current()
    if head.check_inputs:
        check_labels(labels, num_classes, allow_ignore=True,
                     hint=f"this shard has {num_classes} classes; labels must be in [0, {num_classes}) "
                          "or -1 for a class on another shard")
        if check_finite:
            raise_nonfinite(finite_problem(cosine, target_cosine, norms, embeddings, weights), ctx)
    pos = torch.nonzero(labels >= 0).reshape(-1)
    target = labels[pos]
    if cosine is not None:
        target_cosine = cosine[pos, target]
    elif target_cosine is None or target_cosine.shape[0] != pos.numel():
        raise ValueError("target_cosine must hold one cosine per row with a label >= 0")
    return HeadInputs(labels, pos, target, at_least_float32(target_cosine), int(num_classes), norms, embeddings,
                      weights, class_index, ctx, proxy_fn)
