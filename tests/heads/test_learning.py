"""Every head trains: a real optimisation on a small separable problem (CPU, seconds)."""
from __future__ import annotations

import pytest
import torch
from _helpers_heads import all_cases

from lh2face_plugin.classifier import NormalizedClassifier

LEARN_KWARGS = {
    "arcface": dict(s=16.0, m=0.3),
    "cosface": dict(s=16.0, m=0.2),
    "combined": dict(s=16.0, m2=0.2, m3=0.1),
    "lh2face": dict(kappa_min=4.0, kappa_max=16.0),
    "mv-softmax": dict(s=16.0),
    "sv-softmax": dict(s=16.0),
    "uss": dict(base_kwargs=dict(s=16.0, m=0.2), warmup_steps=20),
    "adaface": dict(s=16.0, m=0.3),
    "magface": dict(s=16.0, l_a=2.0, u_a=30.0, l_m=0.2, u_m=0.4, lambda_g=5.0),
    "curricularface": dict(s=16.0, m=0.3),
}


@pytest.mark.parametrize("name", sorted({c[1] for c in all_cases()}))
def test_training_accuracy_goes_up(name):
    if name not in LEARN_KWARGS:
        pytest.fail(f"head {name!r} has no LEARN_KWARGS in tests/heads/test_learning.py")
    torch.manual_seed(0)
    classes, dim, per_class = 12, 16, 20
    centers = torch.nn.functional.normalize(torch.randn(classes, dim), dim=1) * 3
    labels = torch.arange(classes).repeat_interleave(per_class)
    data = centers[labels] + 0.9 * torch.randn(len(labels), dim)
    net = torch.nn.Sequential(torch.nn.Linear(dim, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32))
    clf = NormalizedClassifier(name, 32, classes, head_kwargs=LEARN_KWARGS[name])
    opt = torch.optim.SGD(list(net.parameters()) + list(clf.parameters()), lr=0.1, momentum=0.9)

    def accuracy():
        with torch.no_grad():
            return (clf.cosine(net(data)).argmax(1) == labels).float().mean().item()

    before = accuracy()
    for step in range(150):
        idx = torch.randint(0, len(labels), (60,))
        loss = clf(net(data[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss), (name, step)
    after = accuracy()
    assert after > 0.8 and after > before + 0.4, (name, before, after)


def test_all_heads_covered():
    assert {c[1] for c in all_cases()} <= set(LEARN_KWARGS)
