"""von Mises-Fisher normaliser on S^(n-1): log C_n(kappa) and A_n(kappa).

    f(x; mu, kappa) = C_n(kappa) exp(kappa mu^T x)
    C_n(kappa) = kappa^(n/2-1) / ((2 pi)^(n/2) I_(n/2-1)(kappa))
    d/dkappa log C_n(kappa) = -A_n(kappa),   A_n = I_(n/2) / I_(n/2-1)

Method. Per-row values are few (N), so they are computed in float64 and
returned in the input dtype. log I_v(kappa) uses the uniform (Debye)
asymptotic expansion (Abramowitz & Stegun 9.7.7) with terms u_1..u_4 at an
order v' = v + K >= 24; lower orders come back from the backward recurrence of
the ratio r_v = I_(v+1)/I_v:  r_(v-1) = 1 / (r_v + 2v/kappa)  (stable downwards),
log I_v = log I_(v+K) - sum log r. The same recurrence gives A_n = r_(n/2-1).
Checked against mpmath for n in [2, 4096], kappa in [1e-3, 1e4]
(tests/heads/test_vmf.py states the tolerance).
"""
from __future__ import annotations

import math

import torch

__all__ = ["log_bessel_iv", "log_cn", "vmf_mean_length"]

_MIN_ORDER = 24.0


def _debye_log_iv(v: float, x: torch.Tensor) -> torch.Tensor:
    z = x / v
    sq = torch.sqrt(1.0 + z * z)
    eta = sq + torch.log(z / (1.0 + sq))
    t = 1.0 / sq
    t2 = t * t
    u1 = t * (3.0 - 5.0 * t2) / 24.0
    u2 = t2 * (81.0 - 462.0 * t2 + 385.0 * t2 * t2) / 1152.0
    u3 = t * t2 * (30375.0 - 369603.0 * t2 + 765765.0 * t2**2 - 425425.0 * t2**3) / 414720.0
    u4 = t2 * t2 * (4465125.0 - 94121676.0 * t2 + 349922430.0 * t2**2 - 446185740.0 * t2**3
                    + 185910725.0 * t2**4) / 39813120.0
    series = 1.0 + u1 / v + u2 / v**2 + u3 / v**3 + u4 / v**4
    return v * eta - 0.5 * math.log(2.0 * math.pi * v) - 0.5 * torch.log(sq) + torch.log(series)


def _log_iv_and_ratio(v: float, x: torch.Tensor):
    """(log I_v(x), I_(v+1)(x)/I_v(x)) in float64 for v >= 0, x > 0."""
    x = x.double()
    k = max(0, math.ceil(_MIN_ORDER - v))
    top = v + k
    log_top = _debye_log_iv(top, x)
    r = torch.exp(_debye_log_iv(top + 1.0, x) - log_top)
    log_iv = log_top
    for j in range(k):
        order = top - j
        r = 1.0 / (r + 2.0 * order / x)
        log_iv = log_iv - torch.log(r)
    return log_iv, r


def log_bessel_iv(v: float, x: torch.Tensor) -> torch.Tensor:
    """log I_v(x), float64 internally, for v >= 0 and x > 0 (elementwise, no gradient)."""
    if v < 0:
        raise ValueError(f"order v must be >= 0, got {v}")
    return _log_iv_and_ratio(float(v), x)[0].to(x.dtype)


def vmf_mean_length(n: int, kappa: torch.Tensor) -> torch.Tensor:
    """A_n(kappa) = I_(n/2)(kappa) / I_(n/2-1)(kappa): expected cosine to the mean direction."""
    return _log_iv_and_ratio(n / 2.0 - 1.0, kappa)[1].to(kappa.dtype)


class _LogCn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kappa, n):
        v = n / 2.0 - 1.0
        log_iv, ratio = _log_iv_and_ratio(v, kappa)
        k64 = kappa.double()
        out = v * torch.log(k64) - (n / 2.0) * math.log(2.0 * math.pi) - log_iv
        ctx.save_for_backward(ratio.to(kappa.dtype))
        return out.to(kappa.dtype)

    @staticmethod
    def backward(ctx, grad):
        (ratio,) = ctx.saved_tensors
        return -grad * ratio, None


def log_cn(kappa: torch.Tensor, n: int) -> torch.Tensor:
    """log C_n(kappa) of the vMF density on S^(n-1), differentiable in kappa.

    Args:
        kappa: concentration(s) > 0, any float dtype, any shape.
        n: ambient dimension (>= 2).

    Returns:
        Tensor of ``kappa``'s shape and dtype; its gradient is ``-A_n(kappa)``.
    """
    if int(n) != n or n < 2:
        raise ValueError(f"vMF dimension n must be an integer >= 2, got {n}")
    return _LogCn.apply(kappa, int(n))
