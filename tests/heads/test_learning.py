"""Every head trains: a real optimisation on a small separable problem (CPU, seconds)."""
from __future__ import annotations

import pytest
import torch
from _helpers_heads import all_cases, case_of

from lh2face_plugin.classifier import NormalizedClassifier

@pytest.mark.parametrize("name", sorted({c[1] for c in all_cases()}))
def test_training_accuracy_goes_up(name):
    torch.manual_seed(0)
    classes, dim, per_class = 12, 16, 20
    centers = torch.nn.functional.normalize(torch.randn(classes, dim), dim=1) * 3
    labels = torch.arange(classes).repeat_interleave(per_class)
    data = centers[labels] + 0.9 * torch.randn(len(labels), dim)
    net = torch.nn.Sequential(torch.nn.Linear(dim, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32))
    clf = NormalizedClassifier(name, 32, classes, head_kwargs=case_of(name).learn)
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
