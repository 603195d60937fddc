"""The quickstart reuses a trained model only when its file is whole and the data are the same bytes."""
from __future__ import annotations

import os

import pytest
import torch

from lh2face_plugin.data.synthetic import generate_dataset
from lh2face_plugin.quickstart import QuickstartConfig, train_head


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("qs") / "data"
    paths = generate_dataset(out, identities=4, images_per_id=4, seed=0, eval_identities=4, verify_pairs=4,
                             render_eval=1, progress=False, workers=1)
    return os.path.dirname(paths["rec"])


def test_a_damaged_model_is_trained_again_not_loaded(data_dir, tmp_path):
    cfg = QuickstartConfig(out=str(tmp_path), identities=4, images_per_id=4, steps=2, batch_size=4, workers=0,
                           embedding_size=32)
    first = train_head(cfg, data_dir, "arcface", str(tmp_path / "arcface"), progress=False)
    assert not first["reused"]
    assert train_head(cfg, data_dir, "arcface", str(tmp_path / "arcface"), progress=False)["reused"]
    model = first["model_path"]
    data = open(model, "rb").read()
    open(model, "wb").write(data[: len(data) // 2])  # an interrupted copy, say
    again = train_head(cfg, data_dir, "arcface", str(tmp_path / "arcface"), progress=False)
    assert not again["reused"]
    reloaded = torch.load(model, weights_only=True)
    assert all(torch.equal(v, first["model"].state_dict()[k]) for k, v in reloaded.items())
    open(os.path.join(tmp_path, "arcface", "train.json"), "w").write("{ broken")
    assert not train_head(cfg, data_dir, "arcface", str(tmp_path / "arcface"), progress=False)["reused"]
