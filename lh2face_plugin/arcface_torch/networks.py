"""The checkout's own networks: its ``backbones`` package, imported from the located checkout."""
from __future__ import annotations

import importlib
import os
import sys
from typing import Optional

from ..compact import available_backbones
from .locate import ENV_VAR, locate_checkout
from .reference import compat

__all__ = ["host_get_model", "checkout_get_model", "arcface_backbone"]


def host_get_model(arcface_root: Optional[str]):
    """``backbones.get_model`` of the checkout (put on ``sys.path``; see :func:`~.locate.locate_checkout`).

    Raises:
        RuntimeError: a ``backbones`` module of another folder is already imported.
    """
    root = locate_checkout(arcface_root).root        # the one place that finds and checks a checkout
    loaded = sys.modules.get("backbones")
    if loaded is not None:
        where = os.path.dirname(os.path.dirname(os.path.abspath(getattr(loaded, "__file__", "") or "")))
        if where != root:
            raise RuntimeError(f"a different 'backbones' module is already imported (from {where}), not {root}")
        return loaded.get_model
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module("backbones").get_model


def checkout_get_model(arcface_root: Optional[str]):
    """:func:`host_get_model` for a network that is not one of ours: a checkout must be given (``arcface_root``
    or ``$ARCFACE_TORCH_ROOT``), else one line naming our backbones and how to give one."""
    if not (arcface_root or os.environ.get(ENV_VAR)):
        raise ValueError(
            "this network is not one of ours "
            f"({', '.join(available_backbones())}); give the arcface_torch checkout with "
            f"--arcface-root / arcface_root= or {ENV_VAR} to build its networks"
        )
    return host_get_model(arcface_root)


def arcface_backbone(network: str, root: str, **kwargs):
    """``backbones.get_model(network, dropout=0, fp16=False, **kwargs)`` from the checkout."""
    with compat(root):
        import backbones  # host: importable only inside compat(root)

        try:
            return backbones.get_model(network, dropout=0.0, fp16=False, **kwargs)
        except ValueError:
            raise ValueError(f"arcface_torch has no network named {network!r} (e.g. r18, r50, r100, mbf)") from None
