"""layers/formula.py against the head contract's equation, element by element in float64:

    out_ij = k_i c_ij + [c_ij > t_i] (a c_ij + q c_ij^2 + b),    d out / d c = k_i + [c_ij > t_i] (a + 2 q c_ij)

with the strict inequality of MV-Softmax's indicator (METHODS.md section 2: I_k = 1 when cos_k > f(m, theta_y)):
a cosine equal to its row's threshold gets no bonus. Scales that float32 cannot hold (0.1, 1/3) keep a float64
block exact; ``k`` as a float and as an [R, 1] tensor.
"""
from __future__ import annotations

import pytest
import torch

from lh2face_plugin.layers.formula import negative_logits, times_slope_

DT = torch.float64


def block():
    """[3, 4] cosines; rows 0 and 1 hold their threshold exactly once (columns 1 and 2), row 2 twice (0 and 3)."""
    cos = torch.tensor([[0.30, 0.25, -0.70, 0.90],
                        [-0.10, 0.55, 0.45, 0.20],
                        [0.1, -0.35, 0.8, 0.1]], dtype=DT)
    thresh = torch.tensor([[0.25], [0.45], [0.1]], dtype=DT)
    return cos, thresh


def naive(cos, scale, thresh, a, q, b):
    """(out, slope) lists of lists from the equation."""
    out, slope = [], []
    for i in range(cos.shape[0]):
        k = float(scale[i, 0]) if isinstance(scale, torch.Tensor) else scale
        t = None if thresh is None else float(thresh[i, 0])
        o, d = [], []
        for j in range(cos.shape[1]):
            c = float(cos[i, j])
            hard = t is not None and c > t
            o.append(k * c + ((a * c + q * c * c + b) if hard else 0.0))
            d.append(k + ((a + 2 * q * c) if hard else 0.0))
        out.append(o)
        slope.append(d)
    return torch.tensor(out, dtype=DT), torch.tensor(slope, dtype=DT)


SCALES = {"float": 1 / 3, "tensor": torch.tensor([[0.1], [7.3], [1 / 3]], dtype=DT)}
BONUSES = [(0.1, 0.0, 0.0), (0.0, 0.3, 0.0), (0.0, 0.0, 0.7), (0.1, 0.3, 0.7), (0.0, 0.0, 0.0)]


@pytest.mark.parametrize("scale", sorted(SCALES))
@pytest.mark.parametrize("a, q, b", BONUSES)
@pytest.mark.parametrize("with_thresh", [True, False])
def test_logits_and_slope_are_the_equation_with_ties_left_out(scale, a, q, b, with_thresh):
    cos, thresh = block()
    thresh = thresh if with_thresh else None
    k = SCALES[scale]
    want_out, want_slope = naive(cos, k, thresh, a, q, b)
    out = negative_logits(cos, k, thresh, a, q, b)
    assert out.dtype == DT
    torch.testing.assert_close(out, want_out, rtol=1e-15, atol=1e-15)
    grad = torch.ones_like(cos)
    got = times_slope_(grad, cos, k, thresh, a, q)
    assert got is grad and grad.dtype == DT
    torch.testing.assert_close(grad, want_slope, rtol=1e-15, atol=1e-15)


def test_the_tie_rows_are_in_the_block():
    cos, thresh = block()
    assert int((cos == thresh).sum()) == 4
