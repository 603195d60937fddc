"""lh2face-plugin: LH2Face, MV-Softmax, SV-Softmax and UniTSFace losses for arcface_torch."""
from __future__ import annotations

from typing import Any, List

from .registry import HEADS, INPUT_MODULES

__version__ = "0.1.0"
__all__ = ["build_head", "available_heads", "build_input_module", "available_input_modules", "__version__"]


def build_head(name: str, **kwargs: Any):
    """Build a registered head by name, e.g. ``build_head("lh2face", alpha=0.35)``.

    Raises:
        KeyError: unknown name (the message lists the known names).
        TypeError / ValueError: invalid hyperparameters.
    """
    return HEADS.build(name, **kwargs)


def available_heads() -> List[str]:
    """Sorted names of every registered head, built-in and third-party."""
    return HEADS.names()


def build_input_module(name: str, **kwargs: Any):
    """Build a registered input module (e.g. ``"render"``) by name."""
    return INPUT_MODULES.build(name, **kwargs)


def available_input_modules() -> List[str]:
    return INPUT_MODULES.names()
