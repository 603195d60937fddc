"""Our IJB numbers against arcface_torch's own eval_ijbc.py (needs ARCFACE_TORCH_ROOT and its requirements)."""
import os

import numpy as np
import pytest

from _helpers_eval import make_ijb
from lh2face_plugin.eval import evaluate_ijb, metrics
from lh2face_plugin.eval.ijb import IJBMeta, verification_1to1

pytestmark = pytest.mark.arcface_torch


@pytest.fixture(scope="module")
def host_requirements():
    for mod in ("sklearn", "pandas", "prettytable", "skimage", "cv2"):
        pytest.importorskip(mod)


@pytest.fixture(scope="module")
def ijbc(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("ijbc") / "IJBC")
    make_ijb(root, "IJBC", identities=3, templates_per_id=2, seed=5, onen=False)
    return root


def test_functions_on_same_features(arcface_root, host_requirements, ijbc):
    from lh2face_plugin.arcface_torch.reference import compat, load_functions

    ref = load_functions(arcface_root, "eval_ijbc.py")
    meta = IJBMeta(ijbc, "IJBC")
    rng = np.random.default_rng(0)
    n = len(meta.names)
    feats = (rng.normal(size=(n, 2, 512)) * rng.uniform(0.5, 20, (n, 1, 1))).astype(np.float32)
    ours = verification_1to1(feats, meta.scores, meta.templates, meta.medias, meta.pairs)
    with compat(arcface_root):
        templates, medias = ref["read_template_media_list"](os.path.join(ijbc, "meta", "ijbc_face_tid_mid.txt"))
        p1, p2, label = ref["read_template_pair_list"](os.path.join(ijbc, "meta", "ijbc_template_pair_label.txt"))
        x = feats.reshape(len(feats), 1024)
        x = (x[:, :512] + x[:, 512:]) * meta.scores[:, np.newaxis]
        tfeats, uniq = ref["image2template_feature"](x, templates, medias)
        score = ref["verification"](tfeats, uniq, p1, p2)
    assert np.array_equal(templates, meta.templates) and np.array_equal(label, meta.pairs[:, 2])
    assert np.array_equal(tfeats, ours["template_features"])
    assert np.allclose(score, ours["scores"], rtol=0, atol=1e-12)   # BLAS scores, the reference's order
    fpr, tpr, _ = metrics.roc_curve(label, score)
    assert np.array_equal(fpr, ours["roc"]["fpr"]) and np.array_equal(tpr, ours["roc"]["tpr"])


@pytest.mark.slow
def test_full_script_matches(arcface_root, host_requirements, ijbc, tmp_path):
    import torch

    from lh2face_plugin.eval.embed import load_embedder
    from lh2face_plugin.arcface_torch.networks import arcface_backbone
    from lh2face_plugin.arcface_torch.reference import run_eval_ijbc

    torch.manual_seed(0)
    model = str(tmp_path / "model.pt")
    torch.save(arcface_backbone("mbf", arcface_root).state_dict(), model)
    ref = run_eval_ijbc(arcface_root, model, "mbf", ijbc, "IJBC", str(tmp_path / "ref"), batch_size=16)
    assert os.path.isfile(tmp_path / "ref" / "reference" / "ijbc.npy")
    embed = load_embedder(model, network="mbf", arcface_root=arcface_root)
    ours = evaluate_ijb(embed, ijbc, "IJBC", batch_size=16, workers=1)
    assert np.array_equal(ref["labels"], ours["labels"])
    assert np.allclose(ref["scores"], ours["scores"], rtol=0, atol=1e-5)
    ref_tar = metrics.tar_at_far_nearest(ref["fpr"], ref["tpr"])
    assert ref_tar == ours["arcface_torch"]["tar_at_far"]
