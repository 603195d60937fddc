"""Loss heads: one module per loss family (see :mod:`lh2face_plugin.heads.base` for the base class and
:mod:`lh2face_plugin.layers.contract` for what a head describes).

Heads are found one way: every module here (:func:`~lh2face_plugin.registry.builtin_modules`) is
imported with this package, and each head class it registers with
:func:`~lh2face_plugin.registry.register_head` is a name of the package, so a new built-in head
is one file (``from lh2face_plugin.heads import ElasticFace``).
"""
import importlib
from typing import Dict

from ..registry import HEADS, builtin_modules
from .base import Head, HeadInputs, HeadPlan, HeadResult, LogitSpec, RowTerm


def _builtin_heads() -> Dict[str, type]:
    """The registered head classes of this package's modules, by class name."""
    found = {}
    for name in builtin_modules(__name__):
        for obj in vars(importlib.import_module(name)).values():
            if isinstance(obj, type) and obj.__module__ == name and HEADS.holds(obj):
                found[obj.__name__] = obj
    return found


_BUILTIN = _builtin_heads()
globals().update(_BUILTIN)

__all__ = ["Head", "HeadInputs", "HeadPlan", "HeadResult", "LogitSpec", "RowTerm", *sorted(_BUILTIN)]
