"""The head contract shared by every loss in this package.

A head *describes* how its logits follow from the cosines of one class shard, and which
extra loss terms it adds (:meth:`Head.plan` -> :class:`HeadPlan`); the layers in
:mod:`lh2face_plugin.layers` evaluate that description, and a head never knows which one
runs it. Every head's logits have the form::

    out_ij = k_i c_ij + [c_ij > t_i] (a c_ij + q c_ij^2 + b)     j != y_i
    out_iy = psi(c_iy, *psi_args)                                 the target

(:class:`LogitSpec`). Extra terms come by name: ready scalars (``terms``) and row terms
(:class:`RowTerm`: ``sum_{j != y_i} fn(g_ij)`` over the cosines or over the products with
another per-class matrix), which the layer evaluates in the same column pass as the logits.

Three ways to call a head:

- ``head(cosine, labels) -> logits``: arcface_torch's ``margin_loss`` contract (its
  ``PartialFC_V2`` and ``CombinedMarginLoss``), for heads whose logits need only the cosines;
- ``head.evaluate(cosine, labels, *, norms=None, embeddings=None, weights=None,
  class_index=None, ctx=None) -> HeadResult``: dense logits and terms (tests, references);
- through a layer: :func:`lh2face_plugin.layers.dense.dense_head_loss`, the blockwise layer
  and the plugin's Partial FC, which return the loss.

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

Terms are weighted scalars whose value is global (identical on every rank) and
whose gradient is this rank's part (see :mod:`lh2face_plugin.distributed`); the
loss is ``cross_entropy + sum(terms)``. Heads keep their state (running
statistics, memories, learned thresholds) in buffers and parameters
(:mod:`.running` for moving averages), and the hyperparameters they were built with
in ``state_dict()``'s extra state, so a resume restores them exactly and a resume
into a head built differently is reported.
"""
from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..distributed import DistContext
from ..finite import finite_problem, raise_nonfinite
from ..labels import check_labels

__all__ = ["Head", "HeadInputs", "HeadPlan", "HeadResult", "LogitSpec", "RowTerm", "HyperparameterMismatch", "as_cosine",
           "check_shapes",
           "check_range", "check_positive", "check_bool", "check_int", "check_choice"]


# ----------------------------------------------------------------------------- hyperparameters

def check_range(name: str, value: Any, low: Optional[float] = None, high: Optional[float] = None, *,
                low_open: bool = False, high_open: bool = False) -> float:
    """A finite real hyperparameter in ``[low, high]`` (``(low`` with ``low_open``).

    Raises:
        TypeError: not a real number (bools and strings included), naming ``name``.
        ValueError: NaN, infinite or out of range, naming ``name`` and the range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not _is_real_scalar(value):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value}")
    return value


def _is_real_scalar(value: Any) -> bool:
    try:
        import numpy as np

        return isinstance(value, (np.integer, np.floating))
    except ImportError:  # pragma: no cover
        return False


def check_positive(name: str, value: Any) -> float:
    """A finite hyperparameter > 0."""
    return check_range(name, value, 0.0, low_open=True)


def check_bool(name: str, value: Any) -> bool:
    """A real bool: ``"False"`` or ``0`` are refused rather than read as a truth value."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return value


def check_int(name: str, value: Any, low: Optional[int] = None) -> int:
    """An integer hyperparameter (``3.0`` is accepted, ``3.5``, ``"3"`` and bools are not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not _is_real_scalar(value):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if not math.isfinite(float(value)) or int(value) != value:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value}")
    return value


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


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


class HyperparameterMismatch(ValueError):
    """A head's saved state was made with other hyperparameters than the head loading it."""


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype == torch.float64 else t.float()


def as_cosine(cosine: torch.Tensor) -> torch.Tensor:
    """A dense [N, C] cosine matrix in float32 (float64 kept)."""
    if not isinstance(cosine, torch.Tensor) or cosine.dim() != 2:
        raise ValueError(f"cosine must be an [N, C] tensor, got shape {tuple(getattr(cosine, 'shape', ()))}")
    return _at_least_float32(cosine)


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


class Head(nn.Module):
    """Base class: validation, float32, the calls, hyperparameters in the state.

    Subclasses implement :meth:`plan`. ``check_inputs`` (default on) checks
    the label range and finite features; turn it off to skip the small
    reductions and the host sync they cost.

    ``state_hparams`` names the hyperparameters that give the head's state its
    meaning (e.g. LH2Face's kappa bounds for its running mean); loading a state
    made with other values of those, or by another head class, raises
    :class:`HyperparameterMismatch` (``load_state_dict(..., strict=False)`` warns
    instead); other changed hyperparameters give a warning. ``None`` = all.
    """

    needs_norms: bool = False
    needs_embeddings: bool = False
    needs_weights: bool = False
    state_hparams: Optional[Tuple[str, ...]] = ()

    def __init__(self, check_inputs: bool = True):
        super().__init__()
        self.check_inputs = check_bool("check_inputs", check_inputs)

    # -- the description -------------------------------------------------------------------
    def plan(self, inp: HeadInputs) -> HeadPlan:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement plan(inputs) -> HeadPlan")

    def require_layer(self, layer: str) -> None:
        """Raise a one-line error when this head cannot run on ``layer`` (it describes no plan)."""
        if type(self).plan is Head.plan:
            raise TypeError(f"head {type(self).__name__} cannot run on the {layer} layer: it implements no "
                            "plan(inputs) -> HeadPlan, the description every layer of lh2face_plugin evaluates")

    def setup_shard(self, num_local: int, embedding_size: int) -> None:
        """Called once by the classifier / Partial FC with this shard's class
        count and the embedding size; heads with per-class state allocate it here."""

    # -- calls -----------------------------------------------------------------------------
    def forward(self, cosine: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """arcface_torch's ``margin_loss(logits, labels) -> logits``: [N, C] cosines of this shard
        (labels -1 off-shard) to [N, C] float32 logits.

        Raises:
            TypeError: the head needs norms, embeddings or class proxies, or adds loss terms,
                which arcface_torch's ``PartialFC_V2`` cannot pass or add.
        """
        needs = [n for n, f in (("norms", self.needs_norms), ("embeddings", self.needs_embeddings),
                                ("class proxies", self.needs_weights)) if f]
        if needs:
            raise TypeError(self._host_message(f"needs {' and '.join(needs)}"))
        self.require_layer("dense")
        with torch.autocast(device_type=cosine.device.type, enabled=False):
            cosine = as_cosine(cosine)
            inp = self.inputs(labels, cosine.shape[1], cosine=cosine)
            plan = self.plan(inp)
        if plan.terms or plan.row_terms:
            raise TypeError(self._host_message(f"adds loss terms ({', '.join([*plan.terms, *plan.row_terms])})"))
        from ..layers.dense import evaluate_plan

        return evaluate_plan(plan, inp, cosine).logits

    def _host_message(self, why: str) -> str:
        return (f"{type(self).__name__} {why}: arcface_torch's PartialFC_V2 passes its margin_loss only the "
                "cosines; use lh2face_plugin's Partial FC (lh2face_plugin.arcface_torch.partial_fc_class(host), "
                "or config.loss in a recipe) instead")

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
        """Dense logits and terms of ``cosine`` [N, C] (see the module docstring)."""
        self.require_layer("dense")
        from ..layers.dense import evaluate_plan

        with torch.autocast(device_type=cosine.device.type, enabled=False):
            cosine = as_cosine(cosine)
            inp = self.inputs(labels, cosine.shape[1], norms=norms, embeddings=embeddings, weights=weights,
                              class_index=class_index, ctx=ctx, cosine=cosine)
            return evaluate_plan(self.plan(inp), inp, cosine, inp.embeddings)

    def inputs(self, labels: torch.Tensor, num_classes: int, *, norms=None, embeddings=None, weights=None,
               class_index=None, ctx: Optional[DistContext] = None, cosine: Optional[torch.Tensor] = None,
               target_cosine: Optional[torch.Tensor] = None,
               proxy_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
               check_finite: bool = True) -> HeadInputs:
        """Validate and pack the inputs of one call.

        Exactly one of ``cosine`` (dense [N, C]) and ``target_cosine`` ([P],
        the cosines of the rows whose label is >= 0, in row order) is given;
        ``proxy_fn(cols)`` gives normalised proxies of some columns (see :meth:`HeadInputs.proxies`).
        ``check_finite=False`` leaves NaN/Inf to the loss (a GradScaler then skips the step); else,
        with ``check_inputs``, a NaN/Inf raises the same ``FloatingPointError`` on every rank.

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
        for name, t, need in (("norms", norms, self.needs_norms), ("embeddings", embeddings, self.needs_embeddings),
                              ("weights", weights, self.needs_weights)):
            if need and t is None:
                raise ValueError(f"{type(self).__name__} needs {name}=...: call it through "
                                 "lh2face_plugin's classifier or Partial FC, which pass them")
        check_shapes(n, num_classes, norms=norms, embeddings=embeddings, weights=weights, class_index=class_index)
        norms = None if norms is None else _at_least_float32(norms.reshape(-1))
        embeddings = None if embeddings is None else _at_least_float32(embeddings)
        weights = None if weights is None else _at_least_float32(weights)
        ctx = ctx if ctx is not None else DistContext.current()
        if self.check_inputs:
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
        return HeadInputs(labels, pos, target, _at_least_float32(target_cosine), int(num_classes), norms, embeddings,
                          weights, class_index, ctx, proxy_fn)

    # -- hyperparameters -------------------------------------------------------------------
    def hparams(self) -> dict:
        """The hyperparameters this head was built with (for logs, ``lh2face heads`` and checkpoints)."""
        return dict(getattr(self, "_hparams", {}))

    def _record(self, **hp) -> None:
        self._hparams = {**getattr(self, "_hparams", {}), **hp}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.hparams().items())

    def get_extra_state(self) -> Dict[str, Any]:
        return {"head": type(self).__name__, "hparams": _plain(self.hparams())}

    def set_extra_state(self, state: Any) -> None:
        self._loaded_extra = state

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        key = prefix + "_extra_state"
        saved = state_dict.get(key)
        if isinstance(saved, Mapping):
            critical, other = self._mismatch(saved)
            where = f"{type(self).__name__} state (saved by {saved.get('head', '?')})"
            if critical:
                msg = (f"{where} was made with other hyperparameters: {critical}; its state has another meaning "
                       "in this head. Build the head with the saved values to resume, or load with strict=False "
                       "to accept the state anyway")
                if _caller_strict():
                    raise HyperparameterMismatch(msg)
                warnings.warn(msg, stacklevel=3)
            if other:
                warnings.warn(f"{where}: hyperparameters changed since the checkpoint: {other}", stacklevel=3)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if key in missing_keys:  # checkpoints from before 0.2 carry no hyperparameters
            missing_keys.remove(key)

    def _mismatch(self, saved: Mapping[str, Any]) -> Tuple[str, str]:
        """(differences that change the state's meaning, other differences), as text."""
        ours = _plain(self.hparams())
        theirs = saved.get("hparams", {})
        theirs = theirs if isinstance(theirs, Mapping) else {}
        diff = {n: f"{n}: saved {theirs.get(n)!r}, now {ours.get(n)!r}" for n in sorted(set(ours) | set(theirs))
                if n in theirs and n in ours and theirs[n] != ours[n]}
        keys = set(diff) if self.state_hparams is None else set(self.state_hparams) & set(diff)
        critical = [diff[n] for n in sorted(keys)]
        if saved.get("head") not in (None, type(self).__name__):
            critical.insert(0, f"head: saved {saved.get('head')!r}, now {type(self).__name__!r}")
        return "; ".join(critical), "; ".join(diff[n] for n in sorted(set(diff) - keys))


def _caller_strict() -> bool:
    """The ``strict`` of the ``Module.load_state_dict`` call in progress (default True).

    torch passes ``strict=True`` to every ``_load_from_state_dict`` whatever the caller
    asked, so the caller's own argument is read from its frame; this covers a head loaded
    directly and through any parent module (classifier, Partial FC, a user's wrapper)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "load_state_dict" and "strict" in frame.f_locals:
            return bool(frame.f_locals["strict"])
        frame = frame.f_back
    return True


def _plain(obj: Any) -> Any:
    """Hyperparameters as plain Python values (safe for ``torch.load(weights_only=True)``)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)
