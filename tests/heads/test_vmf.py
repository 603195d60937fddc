"""log C_n(kappa) and A_n(kappa) against mpmath.

Stated tolerance: relative error <= 2e-6 on log C_n (float32 output; values
reach |log C_n| ~ 3e4) and <= 1e-6 on A_n, for n in [2, 4096] and kappa in
[1e-3, 1e4]. Measured worst case when written: 5.5e-8 and 4.8e-8.
"""
from __future__ import annotations

import math

import pytest
import torch

from lh2face_plugin.heads.vmf import log_bessel_iv, log_cn, vmf_mean_length

mpmath = pytest.importorskip("mpmath")
mpmath.mp.dps = 40

DIMS = [2, 3, 4, 7, 64, 255, 256, 512, 1024, 4096]
KAPPAS = [1e-3, 3e-2, 0.5, 1.0, 4.0, 20.0, 64.0, 200.0, 1000.0, 1e4]


def _reference(n, kappa):
    v = mpmath.mpf(n) / 2 - 1
    iv = mpmath.besseli(v, kappa)
    log_c = v * mpmath.log(kappa) - (mpmath.mpf(n) / 2) * mpmath.log(2 * mpmath.pi) - mpmath.log(iv)
    return float(log_c), float(mpmath.besseli(v + 1, kappa) / iv)


@pytest.mark.parametrize("n", DIMS)
def test_log_cn_and_mean_length_match_mpmath_in_float32(n):
    k = torch.tensor(KAPPAS, dtype=torch.float32)
    got = log_cn(k, n)
    got_a = vmf_mean_length(n, k)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    for i, kv in enumerate(KAPPAS):
        ref, ref_a = _reference(n, kv)
        assert abs(got[i].item() - ref) <= 2e-6 * max(1.0, abs(ref)), (n, kv, got[i].item(), ref)
        assert abs(got_a[i].item() - ref_a) <= 1e-6 * ref_a + 1e-12, (n, kv, got_a[i].item(), ref_a)


def test_gradient_is_minus_mean_length():
    k = torch.tensor([0.01, 2.0, 50.0, 3000.0], dtype=torch.float64, requires_grad=True)
    for n in (3, 512):
        (g,) = torch.autograd.grad(log_cn(k, n).sum(), k)
        assert torch.allclose(g, -vmf_mean_length(n, k.detach()), rtol=1e-12)
    assert torch.autograd.gradcheck(lambda x: log_cn(x, 256), (k,))


def test_log_bessel_iv_small_and_half_integer_orders():
    for v, x in [(0.0, 1e-3), (0.5, 3.0), (1.5, 1e4), (30.0, 0.2)]:
        ref = float(mpmath.log(mpmath.besseli(v, x)))
        got = log_bessel_iv(v, torch.tensor([x], dtype=torch.float64)).item()
        assert got == pytest.approx(ref, rel=1e-9, abs=1e-9)


def test_half_order_closed_form():
    # I_{1/2}(x) = sqrt(2 / (pi x)) sinh(x): n = 3
    x = torch.tensor([0.3, 5.0, 40.0], dtype=torch.float64)
    closed = 0.5 * torch.log(2 / (math.pi * x)) + torch.log(torch.sinh(x))
    assert torch.allclose(log_bessel_iv(0.5, x), closed, rtol=1e-10)


def test_bad_dimension():
    with pytest.raises(ValueError, match="n must be an integer >= 2"):
        log_cn(torch.ones(1), 1)
