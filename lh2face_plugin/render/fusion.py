"""Fusion into recognition: a backbone that sees [RGB, canonical RGB, depth].

The 7-channel input reaches an unchanged backbone through a stem whose extra input
channels start at zero, so a pretrained ArcFace backbone computes exactly what it
computed before at step 0 and fine-tunes from its own weights. Two ways:

- :func:`widen_stem` replaces the first ``Conv2d`` with 3 input channels by one with
  ``3 + extra`` input channels: the old kernel on RGB, zeros on the rest. No extra
  cost; works for every arcface_torch backbone (iresnet, mobilefacenet, ViT patch
  embedding) and for our compact backbone.
- :class:`InputAdapter` prepends a 1x1 convolution ``3 + extra -> 3`` initialised as
  the identity on RGB, for backbones whose first layer is not such a convolution.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor, nn

__all__ = ["FUSED_CHANNELS", "fuse", "find_stem", "widen_stem", "InputAdapter", "adapt_backbone"]

FUSED_CHANNELS = 7


def fuse(rgb: Tensor, canonical: Tensor, depth: Tensor, max_depth: float) -> Tensor:
    """Concatenate ``(B, 3, H, W)`` RGB, canonical RGB and ``(B, 1, H, W)`` depth.

    Depth is divided by ``max_depth`` so that all channels live in ``[-1, 1]``.

    Returns:
        ``(B, 7, H, W)``.
    """
    return torch.cat([rgb, canonical, depth / max_depth], dim=1)


def find_stem(module: nn.Module) -> Tuple[nn.Module, str, nn.Conv2d]:
    """The first ``Conv2d`` with 3 input channels in registration order.

    Returns:
        ``(parent, attribute_name, conv)``.

    Raises:
        ValueError: the module has no such convolution.
    """
    for name, child in module.named_modules():
        if isinstance(child, nn.Conv2d) and child.in_channels == 3 and child.groups == 1:
            parent_name, _, attr = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            return parent, attr, child
    raise ValueError(
        f"{type(module).__name__} has no Conv2d with 3 input channels to widen; "
        "use fusion='adapter' to prepend an InputAdapter instead"
    )


def widen_stem(backbone: nn.Module, extra: int = FUSED_CHANNELS - 3) -> nn.Module:
    """Widen ``backbone``'s first 3-channel convolution to ``3 + extra`` channels, in place.

    The new input channels' weights start at zero, so for any input ``x`` and any
    extra channels ``e``: ``widened(cat(x, e)) == backbone(x)`` at initialisation.

    Returns:
        ``backbone`` (modified).
    """
    if int(extra) < 1:
        raise ValueError(f"extra must be >= 1, got {extra}")
    parent, attr, conv = find_stem(backbone)
    new = nn.Conv2d(
        3 + int(extra),
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        1,
        conv.bias is not None,
        conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :3].copy_(conv.weight)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    setattr(parent, attr, new)
    return backbone


class InputAdapter(nn.Module):
    """A 1x1 convolution ``channels -> 3`` that starts as "take the RGB channels".

    Shape:
        - Input: ``(B, channels, H, W)``; Output: ``(B, 3, H, W)``.
    """

    def __init__(self, channels: int = FUSED_CHANNELS) -> None:
        super().__init__()
        if int(channels) <= 3:
            raise ValueError(f"channels must be > 3, got {channels}")
        self.proj = nn.Conv2d(int(channels), 3, 1, bias=False)
        with torch.no_grad():
            self.proj.weight.zero_()
            self.proj.weight[:, :3, 0, 0].copy_(torch.eye(3))

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


def adapt_backbone(backbone: nn.Module, fusion: str = "widen") -> nn.Module:
    """A backbone accepting the fused 7-channel input, equal to ``backbone`` at init.

    Args:
        backbone: any module mapping ``(B, 3, H, W)`` to embeddings.
        fusion: ``"widen"`` (widen the first 3-channel conv in place) or
            ``"adapter"`` (prepend an :class:`InputAdapter`).
    """
    if fusion == "widen":
        return widen_stem(backbone)
    if fusion == "adapter":
        return nn.Sequential(InputAdapter(), backbone)
    raise ValueError(f"fusion must be 'widen' or 'adapter', got {fusion!r}")
