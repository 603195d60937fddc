import math

import pytest
import torch
import torch.nn.functional as F

from lh2face_plugin.render.renderer import Renderer, pixel_grid, rotation_matrix


def smooth_depth(batch=2, size=112, amp=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(batch, 1, 4, 4, generator=g)
    return amp * torch.tanh(F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False))


def test_rotation_matrix_is_orthonormal_and_yaw_turns_x_towards_z():
    angles = torch.tensor([[0.3, -0.2, 0.1], [1.0, 0.5, -0.7]])
    r = rotation_matrix(angles)
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3).expand(2, 3, 3), atol=1e-6)
    assert torch.allclose(torch.det(r), torch.ones(2), atol=1e-6)
    yaw = rotation_matrix(torch.tensor([[math.pi / 2, 0.0, 0.0]]))[0]
    assert torch.allclose(yaw @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, -1.0]), atol=1e-6)


@pytest.mark.parametrize("fov", [0.0, 10.0, 30.0])
def test_frontal_pose_gives_identity_grid_for_any_depth(fov):
    r = Renderer(fov=fov)
    depth = smooth_depth()
    grid = r.canonical_to_view(depth, torch.zeros(2, 6))
    assert torch.allclose(grid, pixel_grid(112, 112).expand(2, -1, -1, -1), atol=1e-5)
    image = torch.rand(2, 3, 112, 112)
    canon, _ = r.frontalise(image, depth, torch.zeros(2, 6))
    assert torch.allclose(canon, image, atol=1e-4)


def test_normals_of_flat_and_tilted_planes():
    r = Renderer(fov=0.0)
    flat = r.normals(torch.zeros(1, 1, 16, 16))
    assert torch.allclose(flat, torch.tensor([0.0, 0.0, -1.0]).view(1, 3, 1, 1).expand_as(flat), atol=1e-6)
    a = 0.5
    u = pixel_grid(16, 16)[..., 0].unsqueeze(1)
    n = r.normals(a * u)
    expected = torch.tensor([a, 0.0, -1.0]) / math.sqrt(1 + a * a)
    assert torch.allclose(n[0, :, 4:-4, 4:-4].mean((1, 2)), expected, atol=1e-5)


def test_shading_is_ambient_plus_diffuse_cosine():
    r = Renderer(fov=0.0)
    light = torch.tensor([[0.2, 0.7, 0.0, 0.0], [0.1, 0.5, 1.0, 0.0]])
    s = r.shading(torch.zeros(2, 1, 8, 8), light)
    assert torch.allclose(s[0], torch.full_like(s[0], 0.9), atol=1e-6)
    assert torch.allclose(s[1], torch.full_like(s[1], 0.1 + 0.5 / math.sqrt(2)), atol=1e-6)


@pytest.mark.parametrize("fov", [0.0, 10.0])
def test_rerendering_inverts_frontalisation(fov):
    """Frontalising a re-rendered view recovers the canonical image where the view is valid."""
    r = Renderer(fov=fov, inverse_iterations=10)
    depth = smooth_depth(amp=0.2)
    view = torch.tensor([[math.radians(25), math.radians(5), 0.05, 0.02, -0.03, 0.0],
                         [math.radians(-15), 0.0, -0.1, 0.0, 0.0, 0.05]])
    yy, xx = torch.meshgrid(torch.linspace(0, 6, 112), torch.linspace(0, 6, 112), indexing="ij")
    canon = torch.stack([torch.sin(xx), torch.cos(yy), torch.sin(xx + yy)]).expand(2, -1, -1, -1) * 0.5 + 0.5
    rendered, valid = r.render_view(canon, depth, view)
    assert valid.mean() > 0.6
    back, grid = r.frontalise(rendered, depth, view)
    inner = (grid.abs() < 0.9).all(-1).unsqueeze(1)
    err = (back - canon).abs().mean(1, keepdim=True)[inner]
    assert err.mean() < 0.02
    identity_err = (rendered - canon).abs().mean(1, keepdim=True)[inner]
    assert identity_err.mean() > 5 * err.mean()


def test_view_depth_of_a_frontal_face_is_the_canonical_depth():
    r = Renderer(fov=10.0)
    depth = smooth_depth()
    z, valid = r.view_depth(depth, torch.zeros(2, 6))
    assert valid.all()
    assert torch.allclose(z, depth, atol=1e-4)


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="fov"):
        Renderer(fov=-1)
    with pytest.raises(ValueError, match="inverse_iterations"):
        Renderer(inverse_iterations=0)


def test_warps_and_shading_compute_in_float32_under_autocast():
    r = Renderer()
    depth, image = smooth_depth(), torch.rand(2, 3, 112, 112)
    view = torch.tensor([[0.5, 0.1, 0.05, 0.02, 0.0, 0.0], [-0.6, 0.0, 0.0, 0.0, 0.03, 0.0]])
    light = torch.tensor([[0.4, 0.6, 0.3, -0.2]] * 2)
    canon, grid = r.frontalise(image, depth, view)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        canon_ac, grid_ac = r.frontalise(image, depth, view)
        shading_ac = r.shading(depth.bfloat16(), light)
    assert canon_ac.dtype == grid_ac.dtype == shading_ac.dtype == torch.float32
    assert torch.equal(grid_ac, grid) and torch.equal(canon_ac, canon)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        bf16_grid = r.canonical_to_view(depth, view)    # not wrapped: what autocast would do to the warp
    assert (bf16_grid.float() - grid).abs().max() * 56 > 0.05, "the check above must be able to fail"
