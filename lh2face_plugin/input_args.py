"""The parameters of a registered input module: over its current defaults (:func:`resolved_input_kwargs`), the
defaults that changed (:func:`previous_defaults`), and those a run was built with (:func:`recorded_input_kwargs`).

A run's key (:func:`lh2face_plugin.training.spec_key`), its ``train.json`` and the record of a ``train_v2`` run
(:mod:`lh2face_plugin.arcface_torch.input_record`) all read them from here.
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, Mapping

from .registry import INPUT_MODULES

__all__ = ["previous_defaults", "resolved_input_kwargs", "recorded_input_kwargs"]


def previous_defaults(input_module: str) -> Dict[str, Any]:
    """The input module class's ``PREVIOUS_DEFAULTS``: parameters whose default changed, at their old values."""
    return dict(getattr(INPUT_MODULES.get(input_module), "PREVIOUS_DEFAULTS", None) or {})


def resolved_input_kwargs(input_module: str, kwargs: Mapping[str, Any]) -> Dict[str, Any]:
    """Every constructor parameter of the input module, ``kwargs`` over its current defaults."""
    factory = INPUT_MODULES.get(input_module)
    resolve = getattr(factory, "resolved_kwargs", None)
    if resolve is not None:
        return dict(resolve(dict(kwargs)))
    params = inspect.signature(factory).parameters
    out = {n: p.default for n, p in params.items() if p.default is not inspect.Parameter.empty}
    out.update(kwargs)
    return out


def recorded_input_kwargs(record: Mapping[str, Any]) -> Dict[str, Any]:
    """The parameters a run's input module was built with, from its ``train.json`` ``"input_module"``.

    A record written since defaults can change holds them all (``"resolved"``). An older one holds only
    the parameters given; those not given took the defaults of the time, which for parameters whose default
    changed since are the class's ``PREVIOUS_DEFAULTS``.
    """
    if record.get("resolved") is not None:
        return dict(record["resolved"])
    kwargs = dict(record.get("kwargs") or {})
    return {**previous_defaults(record["name"]), **kwargs}
