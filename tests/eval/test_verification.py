"""Verification .bin sets: safe loading, decoding and arcface_torch's protocol."""
import os
import pickle

import numpy as np
import pytest

from _helpers_eval import TinyNet, make_pairs, write_bin
from lh2face_plugin.eval import evaluate_verification, torch_embedder
from lh2face_plugin.eval.verification import decode_image, load_bin, verification_metrics


@pytest.fixture(scope="module")
def bin_file(tmp_path_factory):
    images, issame = make_pairs(60, seed=1)
    path = str(tmp_path_factory.mktemp("bin") / "synth.bin")
    return write_bin(path, images, issame), images, issame


def straightforward_protocol(feats, issame):
    """The documented test procedure with plain loops: flip-sum, normalise, 10 folds."""
    e = feats[:, 0].astype(np.float64) + feats[:, 1].astype(np.float64)
    e = e / np.sqrt((e * e).sum(1, keepdims=True))
    dist = np.array([np.sum((e[2 * i] - e[2 * i + 1]) ** 2) for i in range(len(issame))])
    same = np.asarray(issame)
    thresholds = np.arange(0, 4, 0.01)
    n, accs = len(dist), []
    sizes = [n // 10 + (1 if k < n % 10 else 0) for k in range(10)]
    start = 0
    for size in sizes:
        test = np.arange(start, start + size)
        start += size
        train = np.setdiff1d(np.arange(n), test)
        acc = [np.mean((dist[train] < t) == same[train]) for t in thresholds]
        t = thresholds[int(np.argmax(acc))]
        accs.append(np.mean((dist[test] < t) == same[test]))
    norms = [np.linalg.norm(f) for f in np.concatenate([feats[:, 0], feats[:, 1]]).astype(np.float64)]
    return float(np.mean(accs)), float(np.std(accs)), float(np.mean(norms))


def test_evaluate_verification_matches_protocol(bin_file, tmp_path):
    path, _, issame = bin_file
    res = evaluate_verification(torch_embedder(TinyNet()), path, batch_size=16, cache_dir=str(tmp_path / "c"))
    acc, std, xnorm = straightforward_protocol(res["features"], issame)
    assert res["accuracy"] == pytest.approx(acc, abs=1e-12)
    assert res["accuracy_std"] == pytest.approx(std, abs=1e-12)
    assert res["xnorm"] == pytest.approx(xnorm, rel=1e-12)
    assert res["pairs"] == 60 and res["features"].shape == (120, 2, 16)
    assert 0.5 < res["accuracy"] < 1.0
    assert set(res["tar_at_far"]) == {1e-3, 1e-2, 1e-1}
    again = evaluate_verification(lambda b: pytest.fail("cache not used"), path, batch_size=16,
                                  cache_dir=str(tmp_path / "c"))
    assert again["accuracy"] == res["accuracy"]


def test_flip_feature_is_mirror(bin_file):
    path, images, _ = bin_file
    net = torch_embedder(TinyNet())
    res = evaluate_verification(net, path, batch_size=32)
    img = decode_image(load_bin(path)[0][5])
    assert np.allclose(res["features"][5, 1], net(img[None, :, ::-1])[0], atol=1e-5)
    assert not np.allclose(res["features"][5, 0], res["features"][5, 1], atol=1e-3)


@pytest.mark.parametrize("encoding", ["jpeg", "png", "array"])
@pytest.mark.parametrize("protocol", [2, 4])
def test_load_bin_formats(tmp_path, encoding, protocol):
    images, issame = make_pairs(3, seed=2)
    path = write_bin(str(tmp_path / "x.bin"), images, issame, encoding=encoding, protocol=protocol)
    bins, same = load_bin(path)
    assert same.dtype == bool and list(same) == issame and len(bins) == 6
    img = decode_image(bins[1])
    assert img.shape == (112, 112, 3) and img.dtype == np.uint8
    if encoding != "jpeg":
        assert np.array_equal(img, images[1])
    else:
        import cv2

        assert np.array_equal(img, cv2.imdecode(np.frombuffer(bins[1], np.uint8), cv2.IMREAD_COLOR)[..., ::-1])
        assert np.abs(img.astype(int) - images[1]).mean() < 25


def test_python2_style_pickle(tmp_path):
    """Python 2 str -> bytes with encoding='bytes' (protocol 2 SHORT_BINSTRING opcodes)."""
    import cv2

    images, issame = make_pairs(1, seed=3)
    jpgs = [cv2.imencode(".jpg", im)[1].tobytes() for im in images]
    # Hand-assembled protocol-2 pickle as Python 2 writes a tuple (list of str, list of bool).
    body = b"\x80\x02(]q\x00("
    for j in jpgs:
        body += b"T" + len(j).to_bytes(4, "little") + j
    body += b"e]q\x01(\x88et."
    path = tmp_path / "py2.bin"
    path.write_bytes(body)
    bins, same = load_bin(str(path))
    assert bins == jpgs and list(same) == [True]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("payload, match", [
    (([_Evil()], [True]), "refusing to load posix.system|refusing to load os.system|refusing"),
    (([np.array([b"x", None], dtype=object)] * 2, [True]), "object dtype|refusing"),
])
def test_unsafe_pickles_refused(tmp_path, payload, match):
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(ValueError, match=match):
        load_bin(str(path))


def test_bad_bins(tmp_path):
    images, issame = make_pairs(2)
    odd = write_bin(str(tmp_path / "odd.bin"), images[:3], issame, encoding="array")
    with pytest.raises(ValueError, match="odd number"):
        load_bin(odd)
    short = write_bin(str(tmp_path / "short.bin"), images[:2], issame, encoding="array")
    with pytest.raises(ValueError, match="2 images for 2 pairs"):
        load_bin(short)
    with pytest.raises(FileNotFoundError):
        load_bin(str(tmp_path / "missing.bin"))
    (tmp_path / "junk.bin").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="junk.bin"):
        load_bin(str(tmp_path / "junk.bin"))


@pytest.mark.arcface_torch
def test_same_numbers_as_arcface_torch(arcface_root, bin_file):
    """arcface_torch's own evaluate()/test() on the same features and network."""
    pytest.importorskip("sklearn")
    import torch

    from lh2face_plugin.arcface_torch.reference import compat, verification_functions

    path, _, issame = bin_file
    net = TinyNet()
    ours = evaluate_verification(torch_embedder(net), path, batch_size=20)
    ref = verification_functions(arcface_root)
    with compat(arcface_root):
        emb = ours["features"].astype(np.float64).sum(1)
        emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        _, _, accuracy, val, val_std, far = ref["evaluate"](emb, issame, nrof_folds=10)
        assert np.mean(accuracy) == ours["accuracy"] and np.std(accuracy) == ours["accuracy_std"]
        compat = ours["arcface_torch"]
        assert val == compat["tar_at_far"][1e-3] and val_std == compat["tar_at_far_std"][1e-3]
        imgs = np.stack([decode_image(b) for b in load_bin(path)[0]]).transpose(0, 3, 1, 2)
        data = [torch.from_numpy(imgs.copy()).float(), torch.from_numpy(imgs[..., ::-1].copy()).float()]
        _, _, acc2, std2, xnorm, _ = ref["test"]((data, issame), net.eval(), 20, 10)
    assert acc2 == ours["accuracy"] and std2 == ours["accuracy_std"]
    assert xnorm == pytest.approx(ours["xnorm"], rel=1e-6)


def test_metrics_input_shape():
    with pytest.raises(ValueError, match=r"\(2P, 2, D\)"):
        verification_metrics(np.zeros((4, 16)), np.array([True, False]))


def test_a_constant_model_gets_no_tar_at_far():
    """Every score ties: the measured FAR is 1, so no TAR is reported below it (arcface_torch's says 100 %)."""
    issame = np.array([i % 2 == 0 for i in range(200)])
    res = verification_metrics(np.ones((400, 2, 8)), issame)
    assert all(np.isnan(v) for v in res["tar_at_far"].values()) and res["auc"] == 0.5
    assert set(res["tar_at_far_unresolved"]) == {1e-3, 1e-2, 1e-1}
    assert res["arcface_torch"]["tar_at_far"][1e-3] == 1.0 and res["arcface_torch"]["far_measured"][1e-3] == 1.0
    from lh2face_plugin.eval.report import jsonable, verification_table

    doc = jsonable(res)
    assert doc["tar_at_far"]["0.001"] is None and doc["far_measured"]["0.001"] is None
    assert doc["tar_at_far_unresolved"]["0.001"].startswith("not resolvable")
    text = verification_table({"const": res})
    assert "n/a" in text and "100.00" not in text.split("arcface_torch")[0]


def test_repeated_pairs_count_once(tmp_path):
    images, issame = make_pairs(20, seed=4)
    once = write_bin(str(tmp_path / "once.bin"), images, issame)
    tenfold = write_bin(str(tmp_path / "ten.bin"), images * 10, issame * 10)
    embed = torch_embedder(TinyNet())
    a = evaluate_verification(embed, once, batch_size=20)
    with pytest.warns(UserWarning, match=r"ten\.bin: 180 of 200 pairs repeat an earlier pair"):
        b = evaluate_verification(embed, tenfold, batch_size=20)
    assert (b["pairs"], b["duplicate_pairs"], a["duplicate_pairs"]) == (20, 180, 0)
    assert (b["accuracy"], b["accuracy_std"], b["tar_at_far"]) == (a["accuracy"], a["accuracy_std"], a["tar_at_far"])
    swapped = [im for k in range(20) for im in (images[2 * k + 1], images[2 * k])]  # (b, a) is the pair (a, b)
    with pytest.warns(UserWarning, match="20 of 40 pairs repeat"):
        assert evaluate_verification(embed, write_bin(str(tmp_path / "sw.bin"), images + swapped, issame * 2),
                                     batch_size=20)["accuracy"] == a["accuracy"]
    flipped = write_bin(str(tmp_path / "bad.bin"), images * 2, issame + [not s for s in issame])
    with pytest.raises(ValueError, match=r"bad\.bin: pair 20 repeats pair 0 \(the same two images\) with the other"):
        evaluate_verification(embed, flipped, batch_size=20)
