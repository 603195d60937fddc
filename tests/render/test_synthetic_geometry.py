"""The renderer's geometry against independently rendered synthetic faces.

Ground-truth canonical depth and pose are fed to the renderer, so these tests check the
warp, the camera and the convention bridge (:mod:`lh2face_plugin.render.evaluate`), not
any learning.
"""
import numpy as np
import pytest
import torch

synthetic = pytest.importorskip("lh2face_plugin.data.synthetic")

from lh2face_plugin.render.evaluate import synthetic_eval_set, to_renderer_depth, to_renderer_view  # noqa: E402
from lh2face_plugin.render.metrics import erode, frontal_error  # noqa: E402
from lh2face_plugin.render.renderer import Renderer  # noqa: E402


@pytest.fixture(scope="module")
def faces():
    return synthetic_eval_set(6, min_yaw=25.0, max_yaw=35.0, light=None, seed=3)


def _frontal_errors(data, view):
    canon, _ = Renderer(fov=0.0).frontalise(data["images"], data["canonical_depth"], view)
    mask = erode(data["frontal_mask"], 1)
    return frontal_error((canon + 1) / 2, data["frontal"], mask), frontal_error((data["images"] + 1) / 2, data["frontal"], mask)


def test_yawed_face_frontalises_towards_its_frontal_image(faces):
    warped, unwarped = _frontal_errors(faces, faces["view"])
    assert (warped < 0.75 * unwarped).all(), (warped, unwarped)


def test_wrong_pose_sign_does_not_frontalise(faces):
    flipped = faces["view"].clone()
    flipped[:, :3] = -flipped[:, :3]
    right, _ = _frontal_errors(faces, faces["view"])
    wrong, _ = _frontal_errors(faces, flipped)
    assert (right < 0.75 * wrong).all()


def test_frontal_pose_with_true_depth_is_close_to_the_identity_warp():
    ident = synthetic.make_identities(num=2, seed=5)[0]
    s = synthetic.render_face(ident, yaw=0.0, pitch=0.0, roll=0.0, seed=0)
    depth = to_renderer_depth(s.depth[None], s.mask[None])
    view = to_renderer_view([0.0], [0.0])
    grid = Renderer(fov=0.0).canonical_to_view(depth, view)
    image = torch.from_numpy(s.image[None].astype(np.float32)).permute(0, 3, 1, 2) / 255
    canon, _ = Renderer(fov=0.0).frontalise(image, depth, view)
    assert (canon - image).abs().max() < 1e-4
    assert grid.isfinite().all()


def test_view_depth_from_canonical_depth_matches_rendered_depth(faces):
    z, valid = Renderer(fov=0.0).view_depth(faces["canonical_depth"], faces["view"])
    m = erode(faces["mask"], 3) & (valid > 0)
    err = (z - faces["depth"]).abs()[m].mean()
    spread = (faces["depth"][m] - faces["depth"][m].mean()).abs().mean()
    assert err < 0.35 * spread, (float(err), float(spread))


def test_combined_yaw_pitch_roll_frontalises_with_the_converted_pose():
    ident = synthetic.make_identities(num=1, seed=11)[0]
    s = synthetic.render_face(ident, yaw=20.0, pitch=10.0, roll=15.0, seed=0)
    image = torch.from_numpy(s.image[None].astype(np.float32)).permute(0, 3, 1, 2) / 255
    frontal = torch.from_numpy(s.frontal[None].astype(np.float32)).permute(0, 3, 1, 2) / 255
    depth = to_renderer_depth(s.frontal_depth[None], s.frontal_mask[None])
    mask = erode(torch.from_numpy(s.frontal_mask[None, None]), 1)
    canon, _ = Renderer(fov=0.0).frontalise(image, depth, to_renderer_view([20.0], [10.0], [15.0]))
    assert frontal_error(canon, frontal, mask) < 0.6 * frontal_error(image, frontal, mask)
