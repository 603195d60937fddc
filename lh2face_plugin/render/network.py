"""The reconstruction network: canonical depth, albedo, light and viewpoint from one face.

Our design after Unsup3d (Wu et al., CVPR 2020), made small enough to sit in front
of an R50/R100 recognition backbone: one encoder-decoder (U-Net skips) for the
per-pixel maps and a global head on the bottleneck for light and viewpoint.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["Reconstruction", "ReconstructionNet"]


@dataclass
class Reconstruction:
    """What :class:`ReconstructionNet` predicts for a batch of ``B`` faces of size ``H x W``.

    Attributes:
        depth: ``(B, 1, H, W)`` canonical depth, zero-mean per face, in half-image-width units.
        albedo: ``(B, 3, H, W)`` canonical albedo in ``[0, 1]``.
        confidence: ``(B, 2, H, W)`` positive scales of the photometric error for the
            re-rendering from the predicted and from the flipped canonical maps.
        light: ``(B, 4)`` = (ambient, diffuse) in ``[0, 1]``, (lx, ly) in ``[-1, 1]``.
        view: ``(B, 6)`` = (yaw, pitch, roll) in radians, (tx, ty, tz) in depth units.
    """

    depth: Tensor
    albedo: Tensor
    confidence: Tensor
    light: Tensor
    view: Tensor


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    groups = math.gcd(8, cout)
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
        nn.GroupNorm(groups, cout),
        nn.ReLU(inplace=True),
    )


def _spatial_mean(x: Tensor) -> Tensor:
    """``(B, C, 1, 1)`` mean over H and W, as an average pool (ReduceMean's axes input
    defeats the ONNX converter's opset 18 -> 17 step)."""
    return nn.functional.avg_pool2d(x, tuple(x.shape[-2:]))


class _Up(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.conv = _block(cin + cskip, cout, 1)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class ReconstructionNet(nn.Module):
    """Encoder-decoder predicting a :class:`Reconstruction` from aligned faces.

    Args:
        width: channels of the first stage (stages use 1, 2, 4, 4 times it).
        max_depth: depth is ``max_depth * tanh(.)`` after removing its mean, in
            half-image-width units.
        max_angles: largest (yaw, pitch, roll) in degrees.
        max_translation: largest ``|t|`` per axis, in depth units.

    Shape:
        - Input: ``(B, 3, H, W)`` RGB in ``[-1, 1]``, ``H`` and ``W`` divisible by 16.
        - Output: :class:`Reconstruction` at ``H x W``.

    The last layers of the depth and viewpoint heads start at zero, so an untrained
    network predicts a flat face seen frontally and the frontalisation starts as the
    identity warp.
    """

    def __init__(
        self,
        width: int = 16,
        max_depth: float = 0.6,
        max_angles=(60.0, 30.0, 30.0),
        max_translation: float = 0.1,
    ) -> None:
        super().__init__()
        if int(width) < 4:
            raise ValueError(f"width must be >= 4, got {width}")
        if float(max_depth) <= 0:
            raise ValueError(f"max_depth must be > 0, got {max_depth}")
        if len(tuple(max_angles)) != 3:
            raise ValueError(f"max_angles must be (yaw, pitch, roll) degrees, got {max_angles!r}")
        w = int(width)
        self.max_depth = float(max_depth)
        self.register_buffer("angle_scale", torch.tensor([math.radians(a) for a in max_angles]), persistent=False)
        self.max_translation = float(max_translation)
        self.stem = _block(3, w, 2)  # H/2
        self.enc2 = _block(w, 2 * w, 2)  # H/4
        self.enc3 = _block(2 * w, 4 * w, 2)  # H/8
        self.enc4 = _block(4 * w, 4 * w, 2)  # H/16
        self.global_head = nn.Sequential(nn.Linear(4 * w, 4 * w), nn.LeakyReLU(0.1, inplace=True), nn.Linear(4 * w, 10))
        self.dec3 = _Up(4 * w, 4 * w, 2 * w)  # H/8
        self.dec2 = _Up(2 * w, 2 * w, w)  # H/4
        self.dec1 = _Up(w, w, w)  # H/2
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.out = nn.Sequential(_block(w + 3, w, 1), nn.Conv2d(w, 6, 3, 1, 1))
        with torch.no_grad():
            self.global_head[-1].weight.zero_()
            self.global_head[-1].bias.zero_()
            self.out[-1].weight[:1].zero_()
            self.out[-1].bias[:1].zero_()

    def forward(self, images: Tensor) -> Reconstruction:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        if images.shape[-1] % 16 or images.shape[-2] % 16:
            raise ValueError(f"image height and width must be divisible by 16, got {tuple(images.shape[-2:])}")
        e1 = self.stem(images)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        e4 = self.enc4(e3)
        g = self.global_head(_spatial_mean(e4).flatten(1))
        d = self.dec1(self.dec2(self.dec3(e4, e3), e2), e1)
        maps = self.out(torch.cat([self.up(d), images], dim=1))
        raw_depth = maps[:, :1]
        depth = self.max_depth * torch.tanh(raw_depth - _spatial_mean(raw_depth))
        albedo = torch.sigmoid(maps[:, 1:4])
        confidence = nn.functional.softplus(maps[:, 4:6]) + 1e-2
        light = torch.cat([torch.sigmoid(g[:, :2]), torch.tanh(g[:, 2:4])], dim=1)
        view = torch.cat(
            [torch.tanh(g[:, 4:7]) * self.angle_scale, torch.tanh(g[:, 7:10]) * self.max_translation], dim=1
        )
        return Reconstruction(depth=depth, albedo=albedo, confidence=confidence, light=light, view=view)
