"""arcface / cosface / combined reproduce arcface_torch's CombinedMarginLoss (values and gradients)."""
from __future__ import annotations

import importlib.util
import os

import pytest
import torch
import torch.nn.functional as F

import lh2face_plugin


def _host_loss(root):
    spec = importlib.util.spec_from_file_location("arcface_torch_losses", os.path.join(root, "losses.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.CombinedMarginLoss


CASES = [
    ("arcface", dict(s=64.0, m=0.5), (64, 1.0, 0.5, 0.0, 0.0)),
    ("cosface", dict(s=64.0, m=0.4), (64, 1.0, 0.0, 0.4, 0.0)),
    ("combined", dict(s=64.0, m1=1.0, m2=0.5, m3=0.0), (64, 1.0, 0.5, 0.0, 0.0)),
    ("arcface", dict(s=64.0, m=0.5, interclass_filtering_threshold=0.2), (64, 1.0, 0.5, 0.0, 0.2)),
    ("cosface", dict(s=32.0, m=0.35, interclass_filtering_threshold=0.1), (32, 1.0, 0.0, 0.35, 0.1)),
]


@pytest.mark.parametrize("name, ours, theirs", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_same_logits_and_gradients_as_combined_margin_loss(arcface_root, name, ours, theirs):
    CombinedMarginLoss = _host_loss(arcface_root)
    torch.manual_seed(0)
    x = F.normalize(torch.randn(32, 16), dim=1)
    w = F.normalize(torch.randn(20, 16), dim=1)
    cos = (x @ w.t()).clamp(-1, 1)
    labels = torch.randint(0, 20, (32,))
    grad_out = torch.randn(32, 20)

    c1 = cos.clone().requires_grad_()
    out1 = lh2face_plugin.build_head(name, **ours)(c1, labels)
    out1.backward(grad_out)

    c2 = cos.clone().requires_grad_()
    host = CombinedMarginLoss(*theirs)
    out2 = host(c2.clone(), labels.view(-1, 1))  # it works in place on its input
    out2.backward(grad_out)

    assert torch.allclose(out1, out2, atol=2e-4), (out1 - out2).abs().max()
    assert torch.allclose(c1.grad, c2.grad, atol=1e-5), (c1.grad - c2.grad).abs().max()
