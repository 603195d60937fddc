"""A head's hyperparameters: their checks, and their record in the head's state.

Every head checks its hyperparameters when it is built (:func:`check_range` and friends: one-line
errors naming the parameter), records them (:meth:`HyperparameterState._record`) and saves them in
``state_dict()``'s extra state, so a resume restores them exactly and a resume into a head built
differently is reported (:class:`HyperparameterMismatch`, or a warning).
"""
from __future__ import annotations

import math
import sys
import warnings
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from torch import nn

__all__ = ["HyperparameterState", "HyperparameterMismatch", "check_range", "check_positive", "check_bool",
           "check_int", "check_choice"]


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
        import numpy as np  # optional: torch runs without numpy

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


class HyperparameterMismatch(ValueError):
    """A head's saved state was made with other hyperparameters than the head loading it."""


class HyperparameterState(nn.Module):
    """The hyperparameters a module was built with, kept in its ``state_dict()``.

    ``state_hparams`` names the hyperparameters that give the state its meaning; loading a
    state made with other values of those, or by another class, raises
    :class:`HyperparameterMismatch` (``load_state_dict(..., strict=False)`` warns instead);
    other changed hyperparameters give a warning. ``None`` = all.
    """

    state_hparams: Optional[Tuple[str, ...]] = ()

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
