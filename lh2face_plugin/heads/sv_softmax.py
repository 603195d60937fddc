"""SV-Softmax: support vector guided softmax (Wang et al., arXiv 1812.11317).

Support vectors are negatives with ``cos_k > f(m, theta_y)``: ``f = cos``
(SV-Softmax), ``cos - m`` (SV-AM) or ``cos(theta + m)`` (SV-Arc). Their
weight ``h = e^{s (t-1)(cos_k + 1) I_k}``, ``t >= 1``, makes the logit
``s (t cos_k + t - 1)``; ``t = 1`` is the base loss (t_SV = 1 + t_MV).
The target is ``s f(m, theta_y)`` with its true gradient.
"""
from __future__ import annotations

from typing import Optional

from ..registry import register_head
from .hard_negative import HardNegativeSoftmax
from .hparams import check_choice, check_range

__all__ = ["SVSoftmax"]

_DEFAULT_M = {"none": 0.0, "am": 0.35, "arc": 0.5}


@register_head("sv-softmax")
class SVSoftmax(HardNegativeSoftmax):
    """SV-Softmax, SV-AM-Softmax and SV-Arc-Softmax logits.

    Args:
        s: scale (32). t: support-vector weight, >= 1 (1.2).
        margin_type: ``"am"`` (default), ``"arc"`` or ``"none"`` (plain SV-Softmax).
        m: margin; default 0.35 for am, 0.5 for arc, unused for none.
        check_inputs: validate labels and features on every call.

    Shape:
        cosine [N, C], labels [N] (-1 off-shard) -> :class:`~.base.HeadResult` with logits [N, C] float32.
    """

    def __init__(self, s: float = 32.0, t: float = 1.2, margin_type: str = "am", m: Optional[float] = None,
                 check_inputs: bool = True):
        super().__init__(check_inputs)
        check_choice("margin_type", margin_type, sorted(_DEFAULT_M))
        self._init_common(s, _DEFAULT_M[margin_type] if m is None else m, margin_type)
        self.t = check_range("t", t, 1.0)
        self.hard_a = self.hard_b = self.s * (self.t - 1.0)
        self._record(s=self.s, t=self.t, margin_type=margin_type, m=self.m)
