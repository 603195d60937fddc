"""A differentiable face renderer in pure PyTorch: geometry, shading and warps.

Conventions (shared by every function here):

- Image coordinates are normalised as in :func:`torch.nn.functional.grid_sample`
  with ``align_corners=False``: ``u`` runs left to right and ``v`` top to bottom
  over ``[-1, 1]``; grids are ``(B, H, W, 2)`` holding ``(u, v)``.
- Depth ``z`` is measured along the optical axis, positive away from the camera,
  in units of half the image width, relative to the pivot plane ``z = 0`` about
  which the head rotates.
- The camera looks down ``+z`` from distance ``D = 1 / tan(fov / 2)`` in front of
  the pivot plane (``fov`` = horizontal field of view). A pixel ``(u, v)`` at
  depth ``z`` is the 3D point ``(u s, v s, z)`` with ``s = (D + z) / D``; ``fov = 0``
  is the orthographic limit ``s = 1``.
- A viewpoint is ``(yaw, pitch, roll, tx, ty, tz)``: angles in radians, the
  rotation ``R = R_z(roll) R_x(pitch) R_y(yaw)`` about the pivot, then the
  translation, in depth units.
- Normals point towards the camera; a flat face has normal ``(0, 0, -1)``. A light
  is ``(ambient, diffuse, lx, ly)`` with direction ``normalise(lx, ly, -1)`` (from
  the surface towards the light) and shading ``ambient + diffuse * max(0, <n, l>)``.

The canonical face is the input sampled through the reprojection of canonical
pixels (a backward warp); re-rendering the input view needs the inverse of that
map, found by fixed-point iteration (training only).

Reference: S. Wu, C. Rupprecht, A. Vedaldi, "Unsupervised Learning of Probably
Symmetric Deformable 3D Objects from Images in the Wild", CVPR 2020 (Unsup3d).
"""
from __future__ import annotations

import functools
import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "pixel_grid",
    "rotation_matrix",
    "Renderer",
]


def pixel_grid(height: int, width: int, *, device=None, dtype=None) -> Tensor:
    """Pixel centres in normalised coordinates, shape ``(1, H, W, 2)`` holding ``(u, v)``."""
    v = (torch.arange(height, device=device, dtype=dtype) * 2 + 1) / height - 1
    u = (torch.arange(width, device=device, dtype=dtype) * 2 + 1) / width - 1
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([uu, vv], dim=-1).unsqueeze(0)


def rotation_matrix(angles: Tensor) -> Tensor:
    """``R_z(roll) R_x(pitch) R_y(yaw)`` for ``angles`` ``(B, 3)`` = (yaw, pitch, roll) in radians.

    Returns:
        ``(B, 3, 3)`` rotation matrices acting on column vectors ``(x, y, z)``.
    """
    yaw, pitch, roll = angles.unbind(-1)
    one, zero = torch.ones_like(yaw), torch.zeros_like(yaw)
    cy, sy = torch.cos(yaw), torch.sin(yaw)
    cp, sp = torch.cos(pitch), torch.sin(pitch)
    cr, sr = torch.cos(roll), torch.sin(roll)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).view(-1, 3, 3)
    rx = torch.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).view(-1, 3, 3)
    rz = torch.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], -1).view(-1, 3, 3)
    return rz @ rx @ ry


def _float32(method):
    """Run a renderer method with autocast off and half-precision inputs in float32: under
    fp16/bf16 autocast the reprojection's matrix products would move the warp by up to a pixel."""

    @functools.wraps(method)
    def wrapper(self, *tensors: Tensor):
        tensors = tuple(t.float() if t.dtype in (torch.float16, torch.bfloat16) else t for t in tensors)
        device = tensors[0].device.type
        if not torch.amp.is_autocast_available(device):
            return method(self, *tensors)
        with torch.autocast(device_type=device, enabled=False):
            return method(self, *tensors)

    return wrapper


class Renderer(nn.Module):
    """Camera, shading and warps between the canonical frame and the input view.

    Args:
        fov: horizontal field of view in degrees; ``0`` = orthographic. Default 10
            (Unsup3d's choice: nearly orthographic, as for a face crop).
        inverse_iterations: fixed-point steps used to invert the canonical -> view
            map when re-rendering the input view.

    The module has no parameters; it exists so that the camera is part of a model's
    configuration and moves with it across devices. Shading and warps compute in float32,
    also under fp16/bf16 autocast.
    """

    def __init__(self, fov: float = 10.0, inverse_iterations: int = 6) -> None:
        super().__init__()
        if not 0.0 <= float(fov) < 180.0:
            raise ValueError(f"fov must be in [0, 180) degrees, got {fov}")
        if int(inverse_iterations) < 1:
            raise ValueError(f"inverse_iterations must be >= 1, got {inverse_iterations}")
        self.fov = float(fov)
        self.inverse_iterations = int(inverse_iterations)
        self.distance = math.inf if self.fov == 0 else 1.0 / math.tan(math.radians(self.fov) / 2)

    def extra_repr(self) -> str:
        return f"fov={self.fov}, inverse_iterations={self.inverse_iterations}"

    # -- geometry -------------------------------------------------------------------------
    def _scale(self, z: Tensor) -> Tensor:
        if math.isinf(self.distance):
            return torch.ones_like(z)
        return (self.distance + z) / self.distance

    def unproject(self, depth: Tensor) -> Tensor:
        """3D points of every pixel.

        Args:
            depth: ``(B, 1, H, W)``.

        Returns:
            ``(B, H, W, 3)`` points ``(x, y, z)``.
        """
        b, _, h, w = depth.shape
        z = depth[:, 0]
        uv = pixel_grid(h, w, device=depth.device, dtype=depth.dtype)
        s = self._scale(z)
        return torch.stack([uv[..., 0] * s, uv[..., 1] * s, z], dim=-1)

    def project(self, points: Tensor) -> Tensor:
        """Image coordinates ``(..., 2)`` of points ``(..., 3)``."""
        x, y, z = points.unbind(-1)
        s = self._scale(z).clamp_min(1e-3)
        return torch.stack([x / s, y / s], dim=-1)

    def canonical_to_view(self, depth: Tensor, view: Tensor) -> Tensor:
        """Where each canonical pixel lands in the input view (the frontalisation grid).

        Args:
            depth: canonical depth ``(B, 1, H, W)``.
            view: viewpoint ``(B, 6)`` = (yaw, pitch, roll, tx, ty, tz).

        Returns:
            ``(B, H, W, 2)`` grid of input-view coordinates, for ``grid_sample``.
        """
        return self.project(self.transform(depth, view))

    def transform(self, depth: Tensor, view: Tensor) -> Tensor:
        """Canonical pixels' 3D points moved to the input view, ``(B, H, W, 3)``."""
        b, _, h, w = depth.shape
        pts = self.unproject(depth).reshape(b, -1, 3)
        rot = rotation_matrix(view[:, :3])
        pts = pts @ rot.transpose(1, 2) + view[:, None, 3:6]
        return pts.reshape(b, h, w, 3)

    def invert_grid(self, grid: Tensor) -> Tensor:
        """Invert a near-identity warp ``f`` by fixed-point iteration.

        Solves ``f(q) = p`` for every pixel ``p`` with ``q <- q - (f(q) - p)``,
        ``f(q)`` read from ``grid`` by bilinear sampling. Where ``f`` folds
        (self-occlusion) one of the pre-images is returned.

        Args:
            grid: ``(B, H, W, 2)`` samples of ``f`` on the pixel grid.

        Returns:
            ``(B, H, W, 2)`` grid ``g`` with ``f(g(p)) ~ p``.
        """
        b, h, w, _ = grid.shape
        p = pixel_grid(h, w, device=grid.device, dtype=grid.dtype).expand(b, -1, -1, -1)
        field = grid.permute(0, 3, 1, 2)
        q = 2 * p - grid
        for _ in range(self.inverse_iterations):
            fq = F.grid_sample(field, q, mode="bilinear", padding_mode="border", align_corners=False)
            q = q - (fq.permute(0, 2, 3, 1) - p)
        return q

    @_float32
    def view_depth(self, depth: Tensor, view: Tensor) -> Tuple[Tensor, Tensor]:
        """Depth of the visible surface in the input view, from the canonical depth.

        Returns:
            ``(depth, valid)``, both ``(B, 1, H, W)``; see :meth:`render_view` for ``valid``.
        """
        pts = self.transform(depth, view)
        z = pts[..., 2:].permute(0, 3, 1, 2)
        return self._pull(z, self.project(pts))

    def _pull(self, canonical: Tensor, grid: Tensor) -> Tuple[Tensor, Tensor]:
        b, h, w, _ = grid.shape
        inv = self.invert_grid(grid)
        image = F.grid_sample(canonical, inv, mode="bilinear", padding_mode="border", align_corners=False)
        p = pixel_grid(h, w, device=grid.device, dtype=grid.dtype)
        back = F.grid_sample(grid.permute(0, 3, 1, 2), inv, mode="bilinear", padding_mode="border",
                             align_corners=False).permute(0, 2, 3, 1)
        tol = 1.0 / max(h, w)
        valid = (inv.abs() <= 1).all(-1) & ((back - p).abs().amax(-1) < tol)
        return image, valid.unsqueeze(1).to(image.dtype).detach()

    # -- shading --------------------------------------------------------------------------
    def normals(self, depth: Tensor) -> Tensor:
        """Unit surface normals ``(B, 3, H, W)`` of a depth map, facing the camera."""
        pts = self.unproject(depth).permute(0, 3, 1, 2)
        padded = F.pad(pts, (1, 1, 1, 1), mode="replicate")
        du = padded[:, :, 1:-1, 2:] - padded[:, :, 1:-1, :-2]
        dv = padded[:, :, 2:, 1:-1] - padded[:, :, :-2, 1:-1]
        n = torch.cross(dv, du, dim=1)
        return F.normalize(n, dim=1, eps=1e-6)

    @staticmethod
    def light_direction(light: Tensor) -> Tensor:
        """Unit light directions ``(B, 3)`` from lights ``(B, 4)``."""
        lxy = light[:, 2:4]
        return F.normalize(torch.cat([lxy, -torch.ones_like(lxy[:, :1])], dim=1), dim=1)

    @_float32
    def shading(self, depth: Tensor, light: Tensor) -> Tensor:
        """Lambertian shading ``(B, 1, H, W)``: ``ambient + diffuse * max(0, <n, l>)``."""
        n = self.normals(depth)
        cos = (n * self.light_direction(light)[:, :, None, None]).sum(1, keepdim=True).clamp_min(0)
        return light[:, 0, None, None, None] + light[:, 1, None, None, None] * cos

    # -- warps ----------------------------------------------------------------------------
    @_float32
    def frontalise(self, image: Tensor, depth: Tensor, view: Tensor) -> Tuple[Tensor, Tensor]:
        """The canonical (frontal) face: ``image`` sampled through the reprojection.

        Args:
            image: input view ``(B, C, H, W)``.
            depth: canonical depth ``(B, 1, H, W)``.
            view: viewpoint ``(B, 6)``.

        Returns:
            ``(canonical, grid)``: ``(B, C, H, W)`` and the ``(B, H, W, 2)`` grid used.
        """
        grid = self.canonical_to_view(depth, view)
        canon = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return canon, grid

    @_float32
    def render_view(self, canonical: Tensor, depth: Tensor, view: Tensor) -> Tuple[Tensor, Tensor]:
        """Re-render the input view from a canonical image (training only).

        Args:
            canonical: shaded canonical image ``(B, C, H, W)``.
            depth: canonical depth ``(B, 1, H, W)``.
            view: viewpoint ``(B, 6)``.

        Returns:
            ``(image, valid)``: the view ``(B, C, H, W)`` and a ``(B, 1, H, W)`` float
            mask of pixels whose pre-image lies inside the canonical frame and
            satisfies the warp to within half a pixel.
        """
        return self._pull(canonical, self.canonical_to_view(depth, view))
