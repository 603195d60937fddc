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
    s = pair_scores(ours, np.searchsorted(uniq, p1), np.searchsorted(uniq, p2), chunk=512, progress=False,
                    method="reference")
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
    assert np.allclose(res["scores"], ref_s, rtol=0, atol=1e-12)
    fpr, tpr, _ = metrics.roc_curve(pairs[:, 2], ref_s)
    f, t = np.flipud(fpr), np.flipud(tpr)
    for far in metrics.IJB_FARS:
        _, k = min(zip(abs(f - far), range(len(f))))
        assert res["arcface_torch"]["tar_at_far"][far] == t[k]
    assert res["arcface_torch"]["convention"] == metrics.ARCFACE_TORCH_IJB
    assert res["tar_at_far"] == metrics.tar_at_far(pairs[:, 2], res["scores"], metrics.IJB_FARS)["tar_at_far"]


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


# ---- pair_scores: the BLAS path against the reference path -----------------------------------

def dense_ranks(x):
    """Rank of each score among the distinct values: equal arrays <=> same order and same ties."""
    return np.unique(x, return_inverse=True)[1].ravel()


def ijb_like_pairs(seed=0, gallery=60, probes=700, dim=48, density=0.25):
    """Gallery x probe pairs (IJB's 1:1 protocol) with repeats, reversed repeats, self pairs,
    some gallery x gallery and probe x probe pairs, duplicated template features, and
    features one ulp apart (near-ties)."""
    rng = np.random.default_rng(seed)
    t = gallery + probes
    f = rng.normal(size=(t, dim))
    f[5] = f[9]                                    # two templates with identical features
    f[11] = np.nextafter(f[12], np.inf)            # and two one ulp apart in every component
    f = metrics.l2_normalize(f)
    perm = rng.permutation(t)
    gal, prb = perm[:gallery], perm[gallery:]
    r, c = np.nonzero(rng.random((probes, gallery)) < density)
    i1, i2 = gal[c], prb[r]
    n = len(i1)
    rep = rng.integers(0, n, n // 20)
    flip = rng.integers(0, n, n // 20)
    extra1 = np.concatenate([i1[rep], i2[flip], rng.choice(t, 50), rng.choice(gal, 300), rng.choice(prb, 300),
                             np.full(40, 5), np.full(40, 11)])
    extra2 = np.concatenate([i2[rep], i1[flip], rng.choice(t, 50), rng.choice(gal, 300), rng.choice(prb, 300),
                             np.full(40, 0), np.full(40, 0)])
    extra2[-80:] = rng.choice(prb, 80)
    extra1[n // 20 * 2:n // 20 * 2 + 50] = extra2[n // 20 * 2:n // 20 * 2 + 50]        # self pairs
    j1, j2 = np.concatenate([i1, extra1]), np.concatenate([i2, extra2])
    # pairs (5, x) and (9, x) tie exactly in the reference; (11, x) and (12, x) nearly
    j1 = np.concatenate([j1, np.full(40, 9), np.full(40, 12)])
    j2 = np.concatenate([j2, extra2[-80:-40], extra2[-40:]])
    order = rng.permutation(len(j1))
    labels = (rng.random(len(j1)) < 0.02).astype(np.int64)
    return f, j1[order], j2[order], labels


@pytest.mark.parametrize("rows,cols", [(128, 32768), (16, 64), (2, 40)])
def test_pair_scores_blas_equals_reference(monkeypatch, rows, cols):
    from lh2face_plugin.eval import ijb

    monkeypatch.setattr(ijb, "_BLOCK_ROWS", rows)   # small blocks: many blocks, uint16 block keys,
    monkeypatch.setattr(ijb, "_BLOCK_COLS", cols)   # column chunks within a block
    f, i1, i2, labels = ijb_like_pairs()
    ref = pair_scores(f, i1, i2, method="reference", progress=False)
    fast = pair_scores(f, i1, i2, progress=False)
    raw = ijb._pair_scores_blocks(f, i1, i2, progress=False)
    assert ijb._certify_order(raw, f, i1, i2, ijb._score_error_bound(f)) > 0   # the exact ties were redone
    assert np.abs(fast - ref).max() <= min(1e-6, ijb._score_error_bound(f))
    assert np.array_equal(dense_ranks(fast), dense_ranks(ref))
    fr, tr, _ = metrics.roc_curve(labels, ref)
    ff, tf, _ = metrics.roc_curve(labels, fast)
    assert np.array_equal(fr, ff) and np.array_equal(tr, tf)
    assert metrics.tar_at_far_nearest(ff, tf) == metrics.tar_at_far_nearest(fr, tr)
    assert metrics.auc(ff, tf) == metrics.auc(fr, tr)


def test_pair_scores_sparse_blocks():
    """Few pairs over many templates: blocks take the per-pair sum and the gathered-column product."""
    rng = np.random.default_rng(3)
    f = metrics.l2_normalize(rng.normal(size=(5000, 32)))
    i1 = rng.integers(0, 5000, 3000)
    i2 = np.where(rng.random(3000) < 0.5, rng.integers(0, 5000, 3000), rng.integers(0, 40, 3000) * 100)
    ref = pair_scores(f, i1, i2, method="reference", progress=False)
    fast = pair_scores(f, i1, i2, progress=False)
    assert np.abs(fast - ref).max() < 1e-13
    assert np.array_equal(dense_ranks(fast), dense_ranks(ref))


def test_certify_order_repairs_scores_within_the_bound():
    """Scores off by up to delta (here an artificial 1e-4) get the reference's order and ties back."""
    from lh2face_plugin.eval.ijb import _certify_order

    rng = np.random.default_rng(5)
    f = metrics.l2_normalize(np.round(rng.normal(size=(300, 8)), 1))   # coarse features: many exact ties
    i1, i2 = rng.integers(0, 300, 20000), rng.integers(0, 300, 20000)
    ref = pair_scores(f, i1, i2, method="reference", progress=False)
    delta = 1e-4
    key = np.minimum(i1, i2) * 300 + np.maximum(i1, i2)     # repeats of one unordered pair share a value,
    uniq, inv = np.unique(key, return_inverse=True)           # as they do on the BLAS path
    noisy = (ref + rng.uniform(-delta, delta, len(ref)))[np.unique(key, return_index=True)[1]][inv.ravel()]
    assert not np.array_equal(dense_ranks(noisy), dense_ranks(ref))
    fixed = noisy.copy()
    n = _certify_order(fixed, f, i1, i2, delta)
    assert 0 < n < len(ref)
    assert np.array_equal(dense_ranks(fixed), dense_ranks(ref))
    assert np.abs(fixed - ref).max() <= delta


def test_pair_scores_inputs():
    rng = np.random.default_rng(0)
    f = metrics.l2_normalize(rng.normal(size=(20, 8)))
    i1, i2 = rng.integers(0, 20, 100), rng.integers(0, 20, 100)
    with pytest.raises(ValueError, match="method must be"):
        pair_scores(f, i1, i2, method="fast")
    with pytest.raises(ValueError, match="equal length"):
        pair_scores(f, i1, i2[:-1])
    f32 = f.astype(np.float32)                                  # the reference path, bitwise
    assert np.array_equal(pair_scores(f32, i1, i2, progress=False),
                          pair_scores(f32, i1, i2, method="reference", progress=False))
    bad = f.copy()
    bad[3, 2] = np.nan
    s = pair_scores(bad, i1, i2, progress=False)
    assert np.array_equal(np.isnan(s), (i1 == 3) | (i2 == 3))
    assert pair_scores(f, i1[:0], i2[:0]).shape == (0,)


def test_image_names_resolve_inside_the_loose_crops(tmp_path):
    """../x.jpg, absolute paths, /etc/shadow and links leading out are refused, naming the meta line, not the file."""
    import shutil

    from lh2face_plugin.fileio import OutsideRoot

    root = tmp_path / "ijb"
    make_ijb(str(root), identities=2, templates_per_id=2, onen=False)
    secret = tmp_path / "secret.jpg"
    shutil.copy(root / "loose_crop" / "0.jpg", secret)
    os.symlink(secret, root / "loose_crop" / "link.jpg")
    meta = root / "meta"
    originals = {f: (meta / f).read_text() for f in ("synth_face_tid_mid.txt", "synth_name_5pts_score.txt")}
    for name in ("../../secret.jpg", str(secret), "/etc/shadow", "link.jpg", "sub/../../../secret.jpg"):
        for f, text in originals.items():
            lines = text.splitlines()
            lines[1] = name + " " + lines[1].split(" ", 1)[1]
            (meta / f).write_text("\n".join(lines) + "\n")
        with pytest.raises(OutsideRoot) as err:
            evaluate_ijb(torch_embedder(TinyNet()), str(root), "SYNTH", workers=1)
        text = str(err.value)
        where = f"{meta / 'synth_face_tid_mid.txt'} line 2"
        assert text.startswith(f"{where}: names {name!r}, which resolves outside"), text
        assert "\n" not in text and "root:" not in text


def test_repeated_template_pairs_are_evaluated_once_with_a_warning_and_a_count(tmp_path):
    """Issue 23 item 11: a pair listed again (in either order) counts once, as a .bin's repeated pairs do;
    a repeat with the other label is refused naming both lines."""
    feats, templates, medias = synthetic_features(seed=2)
    flip = np.stack([feats, feats[:, ::-1] * 0.5], axis=1)
    scores = np.random.default_rng(3).uniform(0.3, 1.0, len(feats)).astype(np.float32)
    uniq = np.unique(templates)
    pairs = np.array([(a, b, int(a % 7 == b % 7)) for i, a in enumerate(uniq) for b in uniq[i + 1:]])
    once = verification_1to1(flip, scores, templates, medias, pairs)
    repeated = np.concatenate([pairs, pairs[:40], pairs[40:70][:, [1, 0, 2]]])
    with pytest.warns(UserWarning, match=f"70 of {len(repeated)} template pairs repeat an earlier pair"):
        res = verification_1to1(flip, scores, templates, medias, repeated)
    assert res["pairs"] == len(pairs) and res["duplicate_pairs"] == 70 and once["duplicate_pairs"] == 0
    assert res["tar_at_far"] == once["tar_at_far"] and res["far_measured"] == once["far_measured"]
    assert set(res["far_measured"]) == set(res["tar_at_far"])  # the measured FAR beside every TAR
    path = tmp_path / "p.txt"
    clash = np.concatenate([pairs[:5], [[pairs[2, 1], pairs[2, 0], 1 - pairs[2, 2]]]])
    np.savetxt(path, clash, fmt="%d")
    with pytest.raises(ValueError, match=r"p\.txt: line 6 repeats the template pair of line 3 with the other label"):
        verification_1to1(flip, scores, templates, medias, clash, pairs_path=str(path))
