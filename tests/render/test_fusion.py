import importlib
import sys

import pytest
import torch
from torch import nn

from _helpers_render import TinyBackbone
from lh2face_plugin.backbones import build_backbone
from lh2face_plugin.render.fusion import InputAdapter, adapt_backbone, find_stem, fuse


def _same_at_init(backbone, fusion):
    torch.manual_seed(0)
    backbone.eval()
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        ref = backbone(x)
        adapted = adapt_backbone(backbone, fusion).eval()
        extra = torch.randn(2, 3, 112, 112), torch.randn(2, 1, 112, 112)
        got = adapted(fuse(x, *extra, max_depth=0.6))
    assert torch.equal(got, ref) if fusion == "widen" else torch.allclose(got, ref, atol=1e-5)
    return adapted


@pytest.mark.parametrize("fusion", ["widen", "adapter"])
def test_compact_backbone_is_unchanged_at_init(fusion):
    adapted = _same_at_init(build_backbone("compact-tiny", embedding_size=32), fusion)
    first = adapted[0].proj if fusion == "adapter" else adapted.stem[0]
    assert first.in_channels == 7


def test_widened_stem_keeps_rgb_kernel_and_zero_extra_channels():
    b = TinyBackbone()
    old = b.conv.weight.detach().clone()
    adapt_backbone(b, "widen")
    assert b.conv.in_channels == 7
    assert torch.equal(b.conv.weight[:, :3], old)
    assert b.conv.weight[:, 3:].abs().sum() == 0


def test_backbone_without_rgb_conv_says_what_to_do():
    with pytest.raises(ValueError, match="adapter"):
        find_stem(nn.Sequential(nn.Flatten(), nn.Linear(3, 2)))
    with pytest.raises(ValueError, match="fusion"):
        adapt_backbone(TinyBackbone(), "concat")
    with pytest.raises(ValueError, match="channels"):
        InputAdapter(3)


@pytest.mark.arcface_torch
def test_arcface_torch_iresnet_is_unchanged_at_init(arcface_root, monkeypatch):
    monkeypatch.syspath_prepend(arcface_root)
    for name in [m for m in sys.modules if m == "backbones" or m.startswith("backbones.")]:
        monkeypatch.delitem(sys.modules, name)
    get_model = importlib.import_module("backbones").get_model
    adapted = _same_at_init(get_model("r18", num_features=64), "widen")
    assert adapted.conv1.in_channels == 7
