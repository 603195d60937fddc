"""Finite-number checks: every number the package reports comes from finite inputs."""
from __future__ import annotations

from typing import Any

__all__ = ["require_finite_parameters"]


def require_finite_parameters(module: Any, where: str) -> None:
    """Raise ``FloatingPointError`` naming the first parameter or buffer of ``module`` with NaN/Inf values.

    Args:
        module: a ``torch.nn.Module``.
        where: the model's name in the message (its checkpoint file, say).
    """
    import torch

    for name, tensor in module.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise FloatingPointError(f"{where}: parameter {name!r} holds NaN or infinite values; nothing computed "
                                     "from this model would mean anything (a diverged run? use an earlier "
                                     "checkpoint)")
