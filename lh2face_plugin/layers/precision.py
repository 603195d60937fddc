"""Mixed precision in the layers: only the cosine products in half, everything else in float32.

Users run fp16 on CUDA (arcface_torch's ``config.fp16`` with a GradScaler) or bf16 autocast on
either device. The layers follow one rule: the [N, C] products of embeddings and class proxies
may run in ``float16`` or ``bfloat16`` (the product dtype); logits, the logsumexp, the heads'
terms and every gradient are float32, and autocast is off inside the layers, so the forward
pass and the backward's recomputation of each block see the same values (MV-/SV-Softmax's
hard-negative indicator included).
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch

__all__ = ["HALF_DTYPES", "NONFINITE", "no_autocast", "product_dtype", "check_product_dtype", "check_nonfinite"]

HALF_DTYPES = (torch.float16, torch.bfloat16)
NONFINITE = ("raise", "nan")
"""What a NaN/Inf input does: ``raise`` one error on every rank, or leave the loss ``nan`` on every rank."""


def check_nonfinite(policy: str) -> bool:
    """``True`` for ``"raise"`` (check the inputs), ``False`` for ``"nan"``; else a one-line ``ValueError``."""
    if policy not in NONFINITE:
        raise ValueError(f"nonfinite must be one of {', '.join(map(repr, NONFINITE))}, got {policy!r}")
    return policy == "raise"


def no_autocast(device) -> contextlib.AbstractContextManager:
    """Autocast off on ``device`` (a no-op where the device type has no autocast)."""
    kind = torch.device(device).type
    if torch.amp.is_autocast_available(kind):
        return torch.autocast(device_type=kind, enabled=False)
    return contextlib.nullcontext()


def check_product_dtype(dtype: Optional[torch.dtype], where: str = "matmul_dtype") -> Optional[torch.dtype]:
    """``dtype`` if it is ``None``, float16 or bfloat16, else a one-line ``TypeError``."""
    if dtype is not None and dtype not in HALF_DTYPES:
        raise TypeError(f"{where} must be torch.float16, torch.bfloat16 or None (float32 products), got {dtype}")
    return dtype


def product_dtype(x: torch.Tensor, requested: Optional[torch.dtype] = None) -> Optional[torch.dtype]:
    """The dtype of the products for embeddings ``x``: ``requested`` if given; else ``x``'s own
    dtype when it is half; else the autocast dtype of ``x``'s device when the caller's autocast is
    on; else ``None`` (float32)."""
    if requested is not None:
        return check_product_dtype(requested)
    if x.dtype in HALF_DTYPES:
        return x.dtype
    kind = x.device.type
    if torch.amp.is_autocast_available(kind) and torch.is_autocast_enabled(kind):
        dtype = torch.get_autocast_dtype(kind)
        return dtype if dtype in HALF_DTYPES else None
    return None
