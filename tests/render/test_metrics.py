import torch

from lh2face_plugin.render.metrics import erode, frontal_error, mad, side
from lh2face_plugin.render.renderer import Renderer, pixel_grid


def _bump(size=32):
    uv = pixel_grid(size, size)
    return (-0.3 * torch.exp(-(uv ** 2).sum(-1) * 4)).unsqueeze(1)


def test_side_is_scale_invariant_and_positive_for_shape_errors():
    gt = 10 + _bump()
    mask = torch.ones_like(gt, dtype=torch.bool)
    assert side(3.7 * gt, gt, mask).item() < 1e-4 * side(torch.full_like(gt, 10.0), gt, mask).item()
    assert side(torch.full_like(gt, 10.0), gt, mask).item() > 1e-3


def test_mad_zero_for_same_shape_and_grows_with_tilt():
    r = Renderer(fov=0.0)
    gt = _bump()
    mask = torch.ones_like(gt, dtype=torch.bool)
    assert mad(gt, gt, mask, r).item() < 0.05
    u = pixel_grid(32, 32)[..., 0].unsqueeze(1)
    assert mad(gt + 0.1 * u, gt, mask, r) < mad(gt + 0.5 * u, gt, mask, r)


def test_frontal_error_counts_masked_pixels_only():
    a, b = torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)
    b[..., :4] = 1
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    mask[..., 4:] = True
    assert frontal_error(a, b, mask).item() == 0
    assert frontal_error(a, b, ~mask).item() == 1


def test_erode_shrinks_a_square():
    m = torch.zeros(1, 1, 10, 10, dtype=torch.bool)
    m[..., 2:8, 2:8] = True
    assert erode(m, 1).sum() == 16
