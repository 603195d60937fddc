"""MV-Softmax: mis-classified vector guided softmax (Wang et al., AAAI 2020, arXiv 1912.00833).

    L = -log e^{s f(m,theta_y)} / (e^{s f(m,theta_y)} + sum_{k!=y} h(t, theta_k, I_k) e^{s cos_k})

with ``I_k = [cos_k > f(m, theta_y)]`` and ``f = cos - m`` (MV-AM) or
``cos(theta + m)`` (MV-Arc). Fixed weight ``h = e^{s t I_k}`` (hard logit
``s (cos_k + t)``); adaptive weight ``h = e^{s t (cos_k + 1) I_k}`` (hard logit
``s ((t + 1) cos_k + t)``). ``t = 0`` is plain AM/Arc-Softmax. As in the
reference code, the target margin applies only where the target stays
positive (``easy_margin``); the target's gradient is the true one.
"""
from __future__ import annotations

from ..registry import register_head
from .hard_negative import HardNegativeSoftmax
from .hparams import check_bool, check_choice, check_range

__all__ = ["MVSoftmax"]


@register_head("mv-softmax")
class MVSoftmax(HardNegativeSoftmax):
    """MV-AM-Softmax / MV-Arc-Softmax logits.

    Args:
        s: scale (32). m: margin (0.35; radians for arc). t: hard-negative weight (0.2).
        margin_type: ``"am"`` or ``"arc"``.
        weight: ``"adaptive"`` (reference default) or ``"fixed"``.
        easy_margin: apply the target margin only where the target stays positive.
        check_inputs: validate labels and features on every call.

    Shape:
        cosine [N, C], labels [N] (-1 off-shard) -> :class:`~.base.HeadResult` with logits [N, C] float32.
    """

    def __init__(self, s: float = 32.0, m: float = 0.35, t: float = 0.2, margin_type: str = "am",
                 weight: str = "adaptive", easy_margin: bool = True, check_inputs: bool = True):
        super().__init__(check_inputs)
        self._init_common(s, m, check_choice("margin_type", margin_type, ("am", "arc")))
        self.t = check_range("t", t, 0.0)
        self.weight = check_choice("weight", weight, ("adaptive", "fixed"))
        self.easy_margin = check_bool("easy_margin", easy_margin)
        self.hard_a = self.s * self.t if weight == "adaptive" else 0.0
        self.hard_b = self.s * self.t
        self._record(s=self.s, m=self.m, t=self.t, margin_type=margin_type, weight=weight,
                     easy_margin=self.easy_margin)
