"""Shared fixtures for the render tests: small models that keep the tests fast."""
from __future__ import annotations

import torch
from torch import nn

from lh2face_plugin import build_input_module


class TinyBackbone(nn.Module):
    """A 3x112x112 -> D embedding network small enough to export in seconds."""

    def __init__(self, embedding_size: int = 32) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, 4, 1)
        self.fc = nn.Linear(16 * 14 * 14, embedding_size)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(torch.relu(self.conv2(x)).flatten(1))


WITH_TERMS = {"lambda_canon": 0.5, "lambda_view": 0.1}
"""The canonical-face terms at the weights that were the defaults before issue 26 (now off by default)."""


def posed_render_module(seed: int = 0, **kwargs):
    """A small render module whose (otherwise zero-initialised) depth and view heads are random,
    so that the frontalisation is not the identity warp."""
    torch.manual_seed(seed)
    module = build_input_module("render", width=kwargs.pop("width", 4), **kwargs)
    with torch.no_grad():
        module.net.global_head[-1].weight.normal_(0, 0.3)
        module.net.global_head[-1].bias.normal_(0, 0.3)
        module.net.out[-1].weight.normal_(0, 0.1)
    return module


def random_faces(batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, 112, 112, generator=g) * 2 - 1
