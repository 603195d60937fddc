"""Synthetic faces: identities, renders with ground truth, and the written dataset files."""
import filecmp
import io
import json
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from lh2face_plugin.data import face3d, synthetic
from lh2face_plugin.data.recordio import MXIndexedRecordIO, unpack
from lh2face_plugin.data.synthetic import (Degradation, Light, generate_dataset, make_identities, quality_score,
                                           render_face)

SMALL = dict(identities=6, images_per_id=3, eval_identities=6, verify_pairs=20, render_eval=4)
AMBIENT_ONLY = Light(ambient=1.0, diffuse=0.0)


def _bilinear(img, x, y):
    h, w = img.shape[:2]
    x, y = np.clip(x, 0, w - 1.001), np.clip(y, 0, h - 1.001)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    wx, wy = x - x0, y - y0
    if img.ndim == 3:
        wx, wy = wx[:, None], wy[:, None]
    top = img[y0, x0] * (1 - wx) + img[y0, x0 + 1] * wx
    bottom = img[y0 + 1, x0] * (1 - wx) + img[y0 + 1, x0 + 1] * wx
    return top * (1 - wy) + bottom * wy


def _canonical_points(sample):
    """Back-project the visible pixels of a render with its depth and pose into the canonical frame."""
    v, u = np.nonzero(sample.mask)
    z = face3d.HEAD_CENTRE[2] + (face3d.CAMERA_DISTANCE - sample.depth[v, u]) * 112.0
    p = np.stack([u, v, z], 1).astype(np.float64) - face3d.HEAD_CENTRE
    return v, u, p @ face3d.rotation_matrix(*sample.pose) + face3d.HEAD_CENTRE


@pytest.fixture(scope="module")
def ids():
    return make_identities(12, seed=3)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "set"
    return generate_dataset(out, seed=7, progress=False, workers=1, **SMALL)


# ---------------------------------------------------------------- identities
def test_identities_are_deterministic_per_seed():
    a, b, c = make_identities(9, seed=1), make_identities(9, seed=1), make_identities(9, seed=2)
    assert all(np.array_equal(x.params, y.params) and x.family == y.family for x, y in zip(a, b))
    assert not np.allclose(np.stack([x.params for x in a]), np.stack([x.params for x in c]))
    assert [x.index for x in a] == list(range(9))
    assert a[0].params.dtype == np.float32 and a[0].params.shape == (face3d.NUM_PARAMS,)


def test_hard_families_are_closer_than_random_pairs():
    people = make_identities(120, seed=0, family_size=3, hard_fraction=0.5)
    params = np.stack([p.params for p in people])
    fam = np.array([p.family for p in people])
    hard = np.array([p.hard for p in people])
    assert hard.sum() == 60
    sizes = np.bincount(fam)
    assert all(sizes[p.family] > 1 for p in people if p.hard)
    assert all(sizes[p.family] == 1 for p in people if not p.hard)
    d = np.linalg.norm(params[:, None] - params[None], axis=-1)
    same = (fam[:, None] == fam[None]) & ~np.eye(len(people), dtype=bool)
    other = fam[:, None] != fam[None]
    assert d[same].mean() < 0.5 * d[other].mean()
    assert d[same].max() < np.percentile(d[other], 5)


# ---------------------------------------------------------------- renders
def test_render_face_shapes_and_dtypes(ids):
    s = render_face(ids[0], yaw=30.0, pitch=5.0, roll=3.0, light="random", expression="random",
                    degrade="random", seed=4, background="random")
    assert s.image.shape == (112, 112, 3) and s.image.dtype == np.uint8
    assert s.frontal.shape == (112, 112, 3) and s.frontal.dtype == np.uint8
    assert s.depth.shape == (112, 112) and s.depth.dtype == np.float32
    assert s.mask.shape == (112, 112) and s.mask.dtype == bool
    assert s.landmarks.shape == (5, 2) and s.landmarks.dtype == np.float32
    assert 0.0 <= s.quality <= 1.0 and s.pose == (30.0, 5.0, 3.0)
    assert render_face(ids[0], size=64).image.shape == (64, 64, 3)


def test_frontal_equals_render_at_yaw_zero_with_neutral_light(ids):
    plain = render_face(ids[2])
    assert np.array_equal(plain.image, plain.frontal)
    posed = render_face(ids[2], yaw=-35.0, pitch=10.0, light="random", expression="random",
                        degrade="random", seed=11, background="random")
    assert np.array_equal(posed.frontal, plain.image)
    assert np.array_equal(posed.frontal_depth, plain.depth)
    assert not np.array_equal(posed.image, plain.image)


def test_frontal_landmarks_sit_on_the_arcface_template(ids):
    lm = np.stack([render_face(i).landmarks for i in ids])
    err = np.linalg.norm(lm - face3d.ARCFACE_TEMPLATE, axis=-1)
    assert err.mean() < 3.0
    assert lm[:, 0, 0].max() < lm[:, 1, 0].min() and lm[:, 2, 1].max() < lm[:, 3, 1].min()


def test_depth_is_positive_exactly_on_the_mask(ids):
    for yaw in (0.0, 40.0, -55.0):
        s = render_face(ids[1], yaw=yaw, pitch=-8.0, background="random", seed=1)
        assert np.array_equal(s.depth > 0, s.mask)
        assert np.isfinite(s.depth).all()
        assert 0.2 < s.mask.mean() < 0.9
    front = render_face(ids[1])
    nose = np.round(front.landmarks[2]).astype(int)
    eye = np.round(front.landmarks[0]).astype(int)
    assert front.depth[nose[1], nose[0]] < front.depth[eye[1], eye[0]]


@pytest.mark.parametrize("pose", [(30.0, 0.0, 0.0), (-40.0, 10.0, 0.0), (20.0, -10.0, 8.0)])
def test_depth_and_image_agree_with_the_frontal_face(ids, pose):
    """Back-projecting a posed render through its depth lands on the frontal surface and colour."""
    s = render_face(ids[4], *pose, light=AMBIENT_ONLY, seed=2)
    f = render_face(ids[4], light=AMBIENT_ONLY)
    v, u, c = _canonical_points(s)
    inside = _bilinear(f.mask.astype(float), c[:, 0], c[:, 1]) > 0.99
    assert inside.mean() > 0.9
    z_front = face3d.HEAD_CENTRE[2] + (face3d.CAMERA_DISTANCE - _bilinear(f.depth, c[:, 0], c[:, 1])) * 112.0
    depth_err = np.abs(z_front - c[:, 2])[inside]
    assert np.median(depth_err) < 0.1 and np.percentile(depth_err, 90) < 0.5  # template pixels
    colour_err = np.abs(_bilinear(f.image.astype(float), c[:, 0], c[:, 1]) - s.image[v, u])[inside]
    assert colour_err.mean() < 2.0  # 8-bit levels
    other = render_face(ids[5], light=AMBIENT_ONLY)
    assert np.abs(_bilinear(other.image.astype(float), c[:, 0], c[:, 1]) - s.image[v, u])[inside].mean() > 4


def test_yaw_moves_the_nose_towards_its_sign(ids):
    x0 = render_face(ids[0]).landmarks[2, 0]
    assert render_face(ids[0], yaw=30.0).landmarks[2, 0] > x0 + 3
    assert render_face(ids[0], yaw=-30.0).landmarks[2, 0] < x0 - 3
    assert render_face(ids[0], pitch=20.0).landmarks[2, 1] < render_face(ids[0]).landmarks[2, 1] - 2


def test_degradations_lower_quality_and_change_the_image(ids):
    clean = render_face(ids[3])
    assert clean.quality == 1.0 and quality_score(None) == 1.0
    mild, harsh = Degradation(blur=0.8), Degradation(blur=2.0, scale=3.0, noise=10.0, jpeg=20)
    a, b = render_face(ids[3], degrade=mild), render_face(ids[3], degrade=harsh, seed=5)
    assert 1.0 > a.quality > b.quality > 0.0
    assert np.abs(a.image.astype(int) - clean.image).mean() < np.abs(b.image.astype(int) - clean.image).mean()
    assert np.array_equal(render_face(ids[3], degrade=harsh, seed=5).image, b.image)


def test_bad_render_arguments_raise(ids):
    with pytest.raises(ValueError, match="expression"):
        render_face(ids[0], expression=[0.1, 0.2])
    with pytest.raises(ValueError, match="light"):
        render_face(ids[0], light="sunny")
    with pytest.raises(ValueError, match="identities"):
        generate_dataset("unused", identities=1)


# ---------------------------------------------------------------- dataset files
def test_train_rec_has_insightface_layout(dataset):
    n, k, m = SMALL["identities"] * SMALL["images_per_id"], SMALL["identities"], SMALL["images_per_id"]
    rec = MXIndexedRecordIO(dataset["idx"], dataset["rec"], "r")
    head, _ = unpack(rec.read_idx(0))
    assert head.flag == 2 and list(head.label) == [n + 1, n + 1 + k]
    labels = []
    for key in range(1, n + 1):
        h, payload = unpack(rec.read_idx(key))
        assert h.flag == 0 and isinstance(h.label, float)    # what arcface_torch's MXFaceDataset reads
        labels.append(int(h.label))
        img = Image.open(io.BytesIO(payload))
        assert img.size == (112, 112) and img.mode == "RGB"
    assert labels == sorted(labels) and np.bincount(labels).tolist() == [m] * k
    for i in range(k):
        h, payload = unpack(rec.read_idx(n + 1 + i))
        assert list(h.label) == [1 + i * m, 1 + (i + 1) * m] and payload == b""
    rec.close()
    with open(dataset["property"]) as f:
        assert f.read().strip() == f"{k},112,112"
    with open(dataset["train_images"]) as f:
        rows = f.read().splitlines()
    assert len(rows) == n + 1 and rows[0].startswith("key,label,family,hard,quality")


def test_verify_bin_loads_as_arcface_torch_does(dataset):
    with open(dataset["verify_bin"], "rb") as f:
        bins, issame = pickle.load(f, encoding="bytes")
    assert len(bins) == 2 * SMALL["verify_pairs"] and len(issame) == SMALL["verify_pairs"]
    assert all(isinstance(b, bytes) for b in bins) and all(isinstance(s, bool) for s in issame)
    assert 0 < sum(issame) < len(issame)
    assert np.asarray(Image.open(io.BytesIO(bins[0]))).shape == (112, 112, 3)
    with open(dataset["verify_pairs"]) as f:
        pairs = json.load(f)["pairs"]
    assert [p["same"] for p in pairs] == issame
    for p in pairs:
        assert p["same"] == (p["identities"][0] == p["identities"][1])
        assert p["quality"] == ("high" if min(p["image_quality"]) >= synthetic.HIGH_QUALITY else "low")
        if not p["same"] and p["hard"]:
            assert p["families"][0] == p["families"][1]
    assert {(p["hard"], p["quality"]) for p in pairs if not p["same"]} >= {(True, "high"), (False, "high")}


def test_ijb_meta_files_parse_and_match(dataset):
    root = dataset["ijb"]
    meta = os.path.join(root, "meta")
    tid_mid = [line.split() for line in open(os.path.join(meta, "synth_face_tid_mid.txt"))]
    pts = [line.split() for line in open(os.path.join(meta, "synth_name_5pts_score.txt"))]
    pairs = np.loadtxt(os.path.join(meta, "synth_template_pair_label.txt"), dtype=np.int64, ndmin=2)
    assert len(tid_mid) == len(pts) > 0
    assert [r[0] for r in tid_mid] == [r[0] for r in pts]
    templates = {int(r[1]) for r in tid_mid}
    assert pairs.shape[1] == 3 and set(pairs[:, :2].ravel()) <= templates
    assert set(pairs[:, 2]) == {0, 1}
    for row in pts:
        assert len(row) == 12
        crop = Image.open(os.path.join(root, "loose_crop", row[0]))
        lm = np.array(row[1:11], float).reshape(5, 2)
        assert crop.size[0] > 112 and (lm > 0).all() and (lm < crop.size[0]).all()
        assert 0 < float(row[11]) <= 1
    with open(dataset["ijb_pair_splits"]) as f:
        splits = json.load(f)
    assert len(splits["pairs"]) == len(pairs)
    assert np.array_equal(np.array(splits["pairs"])[:, :3], pairs)


def test_ijb_landmarks_follow_the_face(dataset):
    """Aligning a loose crop with its landmarks brings the eyes onto the template's eye row."""
    root = dataset["ijb"]
    row = open(os.path.join(root, "meta", "synth_name_5pts_score.txt")).readline().split()
    lm = np.array(row[1:11], float).reshape(5, 2)
    src, dst = lm - lm.mean(0), face3d.ARCFACE_TEMPLATE - face3d.ARCFACE_TEMPLATE.mean(0)
    a = (src * dst).sum() / (src ** 2).sum()
    b = (src[:, 0] * dst[:, 1] - src[:, 1] * dst[:, 0]).sum() / (src ** 2).sum()
    assert 0.3 < np.hypot(a, b) < 1.0  # loose crops are larger than the aligned face
    crop = np.asarray(Image.open(os.path.join(root, "loose_crop", row[0])).convert("RGB"), float)
    eye = np.round(lm[0]).astype(int)
    corner = crop[:4, :4].reshape(-1, 3).mean(0)
    assert np.abs(crop[eye[1] - 1:eye[1] + 2, eye[0] - 1:eye[0] + 2].reshape(-1, 3).mean(0) - corner).sum() > 20


def test_render_eval_archive(dataset):
    z = np.load(dataset["render_eval"])
    n = SMALL["render_eval"]
    assert z["image"].shape == (n, 112, 112, 3) and z["frontal"].shape == (n, 112, 112, 3)
    assert z["depth"].dtype == np.float32 and z["pose"].shape == (n, 3)
    assert np.array_equal(z["depth"] > 0, z["mask"]) and np.array_equal(z["frontal_depth"] > 0, z["frontal_mask"])
    with open(dataset["meta"]) as f:
        meta = json.load(f)
    assert meta["counts"]["train_images"] == SMALL["identities"] * SMALL["images_per_id"]
    assert meta["counts"]["render_eval"] == n


def test_generation_is_deterministic_and_all_or_nothing(dataset, tmp_path, monkeypatch):
    again = generate_dataset(tmp_path / "again", seed=7, progress=False, workers=2, **SMALL)
    for key in ("rec", "idx", "verify_bin", "render_eval", "meta", "train_images", "ijb_pair_splits"):
        assert filecmp.cmp(dataset[key], again[key], shallow=False), key
    cmp = filecmp.dircmp(os.path.join(dataset["ijb"], "loose_crop"), os.path.join(again["ijb"], "loose_crop"))
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only

    stamp = os.stat(again["rec"]).st_mtime_ns
    assert generate_dataset(tmp_path / "again", seed=7, progress=False, **SMALL) == again
    assert os.stat(again["rec"]).st_mtime_ns == stamp

    other = generate_dataset(tmp_path / "other", seed=8, progress=False, workers=1, **SMALL)
    assert not filecmp.cmp(dataset["rec"], other["rec"], shallow=False)

    calls = []

    def failing(job):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("interrupted")
        return real(job)

    from lh2face_plugin.data.synthetic import runner

    real = runner.run_job
    monkeypatch.setattr(runner, "run_job", failing)
    with pytest.raises(RuntimeError, match="interrupted"):
        generate_dataset(tmp_path / "broken", seed=7, progress=False, workers=1, **SMALL)
    assert not (tmp_path / "broken").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "other"]


def test_render_faces_matches_render_face(ids):
    people = [ids[0], ids[3], ids[0]]
    batch = synthetic.render_faces(people, yaw=[0.0, 25.0, -40.0], pitch=5.0, light=AMBIENT_ONLY)
    assert batch["image"].shape == (3, 112, 112, 3) and batch["quality"].tolist() == [1.0, 1.0, 1.0]
    for k, (person, yaw) in enumerate(zip(people, (0.0, 25.0, -40.0))):
        one = render_face(person, yaw=yaw, pitch=5.0, light=AMBIENT_ONLY)
        assert np.abs(batch["image"][k].astype(int) - one.image).max() <= 1
        assert np.allclose(batch["depth"][k], one.depth, atol=1e-5)
        assert np.array_equal(batch["frontal"][k], render_face(person, light=None).image)
    rand = synthetic.render_faces(people, light="random", degrade="random", background="random", seed=3)
    assert not np.array_equal(rand["image"][0], rand["image"][2])


def test_the_package_keeps_its_public_names_and_imports_no_private_name():
    import ast
    import pathlib

    import lh2face_plugin

    for name in synthetic.__all__:
        assert getattr(synthetic, name) is not None, name
    root = pathlib.Path(lh2face_plugin.__file__).parent
    for path in sorted((root / "data" / "synthetic").glob("*.py")) + sorted((root / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"
