"""The compact face backbones, used without a checkout: :class:`CompactFaceNet` and its presets
(:func:`build_backbone`).

The compact network stands in for arcface_torch's ``get_model`` when no checkout
is present (tests, CPU smoke runs, examples). It follows the interface of the
host's networks: input ``[B, 3, 112, 112]`` float RGB in ``[-1, 1]``
(``(x / 255 - 0.5) / 0.5``), output ``[B, D]`` embeddings that end in a
``BatchNorm1d``, ``fp16`` running the convolutional trunk under autocast.

Architecture (ours): a stride-2 3x3 stem, four stages of improved residual
blocks (BN-conv-BN-PReLU-conv-BN, as in the IResNet family of Deng et al.,
"ArcFace", CVPR 2019) that halve the resolution 56 -> 28 -> 14 -> 7 -> 7, then a
global depthwise 7x7 convolution (the GDC head of MobileFaceNets, Chen et al.,
2018), a linear projection to ``D`` and a ``BatchNorm1d``.
"""
from __future__ import annotations

import difflib
from typing import Any, Dict, List, Sequence

import torch
from torch import Tensor, nn

__all__ = ["CompactFaceNet", "build_backbone", "available_backbones", "is_compact"]

_PRESETS: Dict[str, Dict[str, Any]] = {
    "compact-tiny": dict(width=16, depths=(1, 1, 1, 1)),
    "compact": dict(width=32, depths=(1, 2, 2, 1)),
    "compact-wide": dict(width=64, depths=(1, 2, 2, 1)),
    "compact-tiny-matched": dict(width=18, depths=(2, 1, 1, 1), stem_blocks=4),
}
"""``compact-tiny-matched`` has the parameters (0.502 M) and forward GMACs (0.122 at 1x3x112x112, ptflops)
of ``compact-tiny`` behind the frozen render input module (0.382 M + 0.120 M; 0.034 + 0.087 GMACs): the
compute-matched baseline of the render input (issue 26; ``benchmarks/render_price.py`` counts both)."""


class _IRBlock(nn.Module):
    """Improved residual block: ``BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN`` plus shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(c_in),
            nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.PReLU(c_out),
            nn.Conv2d(c_out, c_out, 3, stride, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        if stride == 1 and c_in == c_out:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.shortcut(x)


class CompactFaceNet(nn.Module):
    """Compact face embedding network.

    Args:
        embedding_size: ``D``, the embedding dimension.
        width: channels of the first stage; stages use ``width * (1, 2, 4, 8)``.
        depths: residual blocks per stage (4 stages; the first block of each of
            the first three stages has stride 2).
        dropout: dropout before the projection (training only).
        stem_blocks: residual blocks of ``width`` channels at the stem's resolution (56x56), before
            the first stage; 0 (the default) adds none.
        fp16: run the convolutional trunk under autocast (float16 on CUDA,
            bfloat16 on CPU); the projection and the final BatchNorm1d run in
            float32, as in arcface_torch.

    Shape:
        - Input: ``[B, 3, 112, 112]`` float RGB in ``[-1, 1]``.
        - Output: ``[B, D]`` float32 embeddings (not L2-normalised).
    """

    def __init__(
        self,
        embedding_size: int = 512,
        width: int = 32,
        depths: Sequence[int] = (1, 2, 2, 1),
        dropout: float = 0.0,
        fp16: bool = False,
        stem_blocks: int = 0,
    ) -> None:
        super().__init__()
        if int(embedding_size) < 1:
            raise ValueError(f"embedding_size must be a positive integer, got {embedding_size!r}")
        if int(width) < 1:
            raise ValueError(f"width must be a positive integer, got {width!r}")
        depths = tuple(int(d) for d in depths)
        if len(depths) != 4 or min(depths) < 1:
            raise ValueError(f"depths must be 4 positive integers (one per stage), got {depths!r}")
        if isinstance(stem_blocks, bool) or int(stem_blocks) != stem_blocks or stem_blocks < 0:
            raise ValueError(f"stem_blocks must be an integer >= 0, got {stem_blocks!r}")
        self.embedding_size = int(embedding_size)
        self.fp16 = bool(fp16)
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.PReLU(width),
            *[_IRBlock(width, width, 1) for _ in range(int(stem_blocks))],
        )
        stages, c_in = [], width
        for i, depth in enumerate(depths):
            c_out = width * 2**i
            blocks = [_IRBlock(c_in, c_out, 2 if i < 3 else 1)]
            blocks += [_IRBlock(c_out, c_out, 1) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.gdc = nn.Sequential(
            nn.BatchNorm2d(c_in), nn.Conv2d(c_in, c_in, 7, 1, 0, groups=c_in, bias=False), nn.BatchNorm2d(c_in)
        )
        self.dropout = nn.Dropout(p=float(dropout))
        self.fc = nn.Linear(c_in, self.embedding_size, bias=False)
        self.features = nn.BatchNorm1d(self.embedding_size)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or tuple(x.shape[2:]) != (112, 112):
            raise ValueError(f"expected input [B, 3, 112, 112], got {list(x.shape)}")
        amp_dtype = torch.float16 if x.device.type == "cuda" else torch.bfloat16
        with torch.autocast(device_type=x.device.type, dtype=amp_dtype, enabled=self.fp16):
            x = self.gdc(self.stages(self.stem(x)))
            x = self.dropout(torch.flatten(x, 1))
        return self.features(self.fc(x.float()))


def available_backbones() -> List[str]:
    """Names accepted by :func:`build_backbone` (sorted)."""
    return sorted(_PRESETS)


def is_compact(name: str) -> bool:
    """``name`` is one of :func:`available_backbones` (any case, ``_`` or ``-``)."""
    return str(name).lower().replace("_", "-") in _PRESETS


def build_backbone(name: str = "compact", embedding_size: int = 512, **kwargs: Any) -> CompactFaceNet:
    """Build a compact backbone by preset name.

    Presets: ``compact-tiny`` (width 16, one block per stage), ``compact``
    (width 32, depths 1-2-2-1), ``compact-wide`` (width 64) and ``compact-tiny-matched`` (width 18,
    depths 2-1-1-1, 4 stem blocks: compact-tiny's size and compute with the render input). Any
    :class:`CompactFaceNet` argument (``width``, ``depths``, ``dropout``, ``fp16``,
    ``stem_blocks``) overrides the preset. ``num_features`` is accepted as an alias of
    ``embedding_size`` (arcface_torch's keyword).

    Raises:
        KeyError: unknown name; the message lists the known names.
    """
    key = str(name).lower().replace("_", "-")
    if key not in _PRESETS:
        close = difflib.get_close_matches(key, _PRESETS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown backbone {name!r}.{hint} Known backbones: {', '.join(available_backbones())}")
    if "num_features" in kwargs:
        embedding_size = kwargs.pop("num_features")
    return CompactFaceNet(embedding_size=embedding_size, **{**_PRESETS[key], **kwargs})
