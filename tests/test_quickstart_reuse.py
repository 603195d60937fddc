"""A trained model is reused only when its file is whole and the data are the same bytes."""
from __future__ import annotations

import os

import pytest
import torch

from lh2face_plugin.data.synthetic import generate_dataset
from lh2face_plugin.training import TrainConfig, data_fingerprint, train_model


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("qs") / "data"
    paths = generate_dataset(out, identities=4, images_per_id=4, seed=0, eval_identities=4, verify_pairs=4,
                             render_eval=1, progress=False, workers=1)
    return os.path.dirname(paths["rec"])


def _train(data_dir, out):
    cfg = TrainConfig(steps=2, batch_size=4, workers=0, embedding_size=32)
    return train_model(cfg, data_dir, "arcface", out, progress=False, echo=lambda *_: None)


def test_a_damaged_model_is_trained_again_not_loaded(data_dir, tmp_path):
    out = str(tmp_path / "arcface")
    first = _train(data_dir, out)
    assert not first.reused
    assert _train(data_dir, out).reused
    model = first.model_path
    data = open(model, "rb").read()
    open(model, "wb").write(data[: len(data) // 2])  # an interrupted copy, say
    again = _train(data_dir, out)
    assert not again.reused
    reloaded = torch.load(model, weights_only=True)
    assert all(torch.equal(v, first.model.state_dict()[k]) for k, v in reloaded.items())
    open(os.path.join(out, "train.json"), "w").write("{ broken")
    with pytest.raises(FileExistsError):  # a model.pt without a readable record is not ours to replace
        _train(data_dir, out)


def test_the_data_key_follows_the_bytes(data_dir, tmp_path):
    key = data_fingerprint(data_dir)
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("train.rec", "train.idx", "property"):
        data = open(os.path.join(data_dir, name), "rb").read()
        if name == "train.rec":
            data = data[:-8] + bytes(8)  # same size, other bytes
        (copy / name).write_bytes(data)
    assert data_fingerprint(str(copy)) != key
