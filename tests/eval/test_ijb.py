"""IJB 1:1 and 1:N against straightforward implementations of the documented procedure."""
import json
import os
import warnings

import numpy as np
import pytest

from _helpers_eval import TEMPLATE, TinyNet, make_ijb
from lh2face_plugin.eval import evaluate_ijb, metrics, torch_embedder
from lh2face_plugin.eval.align import similarity_transform
from lh2face_plugin.backbones import load_weights
from lh2face_plugin.eval.embed import extract_features
from lh2face_plugin.eval.ijb import IJBMeta, pair_scores, template_features, verification_1to1


def loop_templates(img_feats, templates, medias):
    """Per template: mean over each media's images, sum over media, L2-normalise."""
    uniq = np.unique(templates)
    out = np.zeros((len(uniq), img_feats.shape[1]))
    for k, t in enumerate(uniq):
        rows = np.where(templates == t)[0]
        media_feats = []
        for m in np.unique(medias[rows]):
            sel = img_feats[rows[medias[rows] == m]]
            media_feats.append(sel[0:1] if len(sel) == 1 else np.mean(sel, axis=0, keepdims=True))
        out[k] = np.sum(np.array(media_feats), axis=0)
    norms = np.sqrt(np.einsum("ij,ij->i", out, out))
    return out / norms[:, None], uniq


def loop_scores(feats, uniq, p1, p2):
    pos = {t: i for i, t in enumerate(uniq)}
    f1 = feats[[pos[t] for t in p1]][:, None]
    f2 = feats[[pos[t] for t in p2]][:, None]
    return np.sum(f1 * f2, -1).ravel()


def synthetic_features(n_img=400, n_tmpl=60, dim=32, seed=0):
    rng = np.random.default_rng(seed)
    templates = np.sort(rng.choice(np.arange(1000, 1000 + 3 * n_tmpl, 3), n_img))
    medias = templates * 10 + rng.integers(0, 4, n_img)
    perm = rng.permutation(n_img)
    feats = (rng.normal(size=(n_img, dim)) * rng.uniform(0.1, 30, (n_img, 1))).astype(np.float32)
    return feats[perm], templates[perm], medias[perm]


def test_template_pooling_and_scores_bitwise():
    feats, templates, medias = synthetic_features()
    ours, uniq = template_features(feats, templates, medias)
    ref, ref_uniq = loop_templates(feats, templates, medias)
    assert np.array_equal(uniq, ref_uniq)
    assert np.array_equal(ours, ref)
    rng = np.random.default_rng(1)
    p1, p2 = rng.choice(uniq, 5000), rng.choice(uniq, 5000)
    s = pair_scores(ours, np.searchsorted(uniq, p1), np.searchsorted(uniq, p2), chunk=512, progress=False)
    assert np.array_equal(s, loop_scores(ref, ref_uniq, p1, p2))


def test_verification_1to1_table():
    feats, templates, medias = synthetic_features(seed=2)
    flip = np.stack([feats, feats[:, ::-1] * 0.5], axis=1)
    scores = np.random.default_rng(3).uniform(0.3, 1.0, len(feats)).astype(np.float32)
    uniq = np.unique(templates)
    pairs = np.array([(a, b, int(a % 7 == b % 7)) for i, a in enumerate(uniq) for b in uniq[i + 1:]])
    res = verification_1to1(flip, scores, templates, medias, pairs)
    x = (flip[:, 0] + flip[:, 1]) * scores[:, None]
    ref_f, ref_u = loop_templates(x, templates, medias)
    ref_s = loop_scores(ref_f, ref_u, pairs[:, 0], pairs[:, 1])
    assert np.array_equal(res["scores"], ref_s)
    fpr, tpr, _ = metrics.roc_curve(pairs[:, 2], ref_s)
    f, t = np.flipud(fpr), np.flipud(tpr)
    for far in metrics.IJB_FARS:
        _, k = min(zip(abs(f - far), range(len(f))))
        assert res["tar_at_far"][far] == t[k]


def test_similarity_transform_recovers_known_warp():
    ang, scale, shift = np.deg2rad(17.0), 1.7, np.array([12.0, -5.0])
    rot = scale * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    src = (TEMPLATE.astype(np.float64) - shift) @ np.linalg.inv(rot).T
    m = similarity_transform(src, TEMPLATE.astype(np.float64))
    assert np.allclose(m[:, :2], rot, atol=1e-9) and np.allclose(m[:, 2], shift, atol=1e-7)
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), TEMPLATE)


def test_similarity_transform_equals_skimage():
    transform = pytest.importorskip("skimage.transform")
    rng = np.random.default_rng(0)
    for _ in range(50):
        src = (TEMPLATE * rng.uniform(0.8, 2.5) + rng.normal(0, 3, (5, 2)) + rng.uniform(0, 90, 2)).astype(np.float32)
        t = transform.SimilarityTransform()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t.estimate(src, TEMPLATE)
        assert np.array_equal(similarity_transform(src, TEMPLATE), t.params[:2])


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("ijb") / "SYNTH")
    info = make_ijb(root, "SYNTH")
    return root, info


def test_evaluate_ijb_end_to_end(synth, tmp_path):
    import cv2

    root, info = synth
    net = torch_embedder(TinyNet())
    res = evaluate_ijb(net, root, "SYNTH", batch_size=16, cache_dir=str(tmp_path / "c"), workers=2)
    assert (res["images"], res["templates"], res["pairs"]) == (info["images"], info["templates"], info["pairs"])
    meta = IJBMeta(root, "SYNTH")
    feats = []
    for name, lmk in zip(meta.names, meta.landmarks):
        img = cv2.imread(os.path.join(root, "loose_crop", name))
        aligned = cv2.warpAffine(img, similarity_transform(lmk, TEMPLATE), (112, 112), borderValue=0.0)[..., ::-1]
        feats.append(net(np.stack([aligned, aligned[:, ::-1]])))
    feats = np.stack(feats)
    assert np.allclose(res["features"], feats, atol=1e-5)
    ref = verification_1to1(res["features"], meta.scores, meta.templates, meta.medias, meta.pairs)
    assert np.array_equal(res["scores"], ref["scores"])
    assert 0 < res["auc"] < 1
    ident = res["identification"]
    assert set(ident) == {"G1", "G2", "mean"}
    assert ident["mean"]["rank"][1] == pytest.approx((ident["G1"]["rank"][1] + ident["G2"]["rank"][1]) / 2)


def test_identification_against_loops(synth):
    root, info = synth
    feats, uniq = template_features(np.random.default_rng(0).normal(size=(info["images"], 8)).astype(np.float32),
                                    IJBMeta(root, "SYNTH").templates, IJBMeta(root, "SYNTH").medias)
    meta = IJBMeta(root, "SYNTH")
    from lh2face_plugin.eval.ijb import identification_1toN

    res = identification_1toN(feats, uniq, meta.onen, fpirs=(0.5,), ranks=(1,))
    p_t, p_s = meta.onen["1N_probe_mixed"]
    for g in ("G1", "G2"):
        g_t, g_s = meta.onen[f"1N_gallery_{g}"]
        hits, nm_top, mated_top = 0, [], []
        for t, s in zip(p_t, p_s):
            sims = [float(feats[list(uniq).index(t)] @ feats[list(uniq).index(gt)]) for gt in g_t]
            best = int(np.argmax(sims))
            if s in g_s:
                hits += g_s[best] == s
                mated_top.append((g_s[best] == s, sims[best]))
            else:
                nm_top.append(max(sims))
        assert res[g]["rank"][1] == hits / len(mated_top)
        nm_top.sort(reverse=True)
        tau = nm_top[int(np.floor(0.5 * len(nm_top)))]
        assert res[g]["tpir"][0.5] == sum(ok and sc > tau for ok, sc in mated_top) / len(mated_top)


def test_feature_cache_resumes(tmp_path):
    calls = []
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (10, 112, 112, 3), dtype=np.uint8)
    net = torch_embedder(TinyNet())

    def load(idx, fail_after=None):
        calls.append(int(idx[0]))
        if fail_after is not None and idx[0] >= fail_after:
            raise RuntimeError("interrupted")
        return data[idx]

    with pytest.raises(RuntimeError, match="interrupted"):
        extract_features(net, lambda i: load(i, fail_after=6), 10, batch_size=2, cache_dir=str(tmp_path),
                         cache_key="k", chunk_size=4)
    state = json.loads((tmp_path / "state.json").read_text())
    assert sorted(state["chunks"]) == ["0"]
    calls.clear()
    feats = extract_features(net, load, 10, batch_size=2, cache_dir=str(tmp_path), cache_key="k", chunk_size=4)
    assert calls == [4, 6, 8]
    assert np.allclose(feats, extract_features(net, load, 10, batch_size=5), atol=1e-6)
    with pytest.raises(ValueError, match="another model"):
        extract_features(net, load, 10, batch_size=2, cache_dir=str(tmp_path), cache_key="other", chunk_size=4)


def test_bad_inputs(synth, tmp_path):
    import shutil

    root, _ = synth
    with pytest.raises(FileNotFoundError, match="ijbb_face_tid_mid"):
        IJBMeta(root, "IJBB")
    broken = str(tmp_path / "b")
    shutil.copytree(root, broken)
    os.remove(os.path.join(broken, "loose_crop", "3.jpg"))
    with pytest.raises(FileNotFoundError, match="3.jpg"):
        evaluate_ijb(torch_embedder(TinyNet()), broken, "SYNTH")
    lines = open(os.path.join(root, "meta", "synth_name_5pts_score.txt")).read().splitlines()
    lines[1], lines[2] = lines[2], lines[1]
    open(os.path.join(broken, "meta", "synth_name_5pts_score.txt"), "w").write("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="same order; first difference at row 2"):
        IJBMeta(broken, "SYNTH")
    shutil.copy(os.path.join(root, "meta", "synth_name_5pts_score.txt"), os.path.join(broken, "meta"))
    with open(os.path.join(broken, "meta", "synth_template_pair_label.txt"), "a") as f:
        f.write("99999 103 0\n")
    meta = IJBMeta(broken, "SYNTH")
    feats = np.ones((len(meta.names), 2, 4), np.float32)
    with pytest.raises(ValueError, match="template 99999"):
        verification_1to1(feats, meta.scores, meta.templates, meta.medias, meta.pairs)


def test_model_network_mismatch(tmp_path):
    import torch

    path = str(tmp_path / "model.pt")
    torch.save(TinyNet(dim=16).state_dict(), path)
    load_weights(TinyNet(dim=16), path, "tiny16")
    with pytest.raises(ValueError, match="does not match network 'tiny8'.*shape mismatches: fc.weight"):
        load_weights(TinyNet(dim=8), path, "tiny8")
    torch.save({"weird": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="missing keys: conv.weight"):
        load_weights(TinyNet(), path, "tiny")
