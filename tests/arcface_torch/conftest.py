import importlib

import pytest
import torch

from _helpers_arcface_torch import forget_host_modules, write_fake_checkout
from lh2face_plugin.arcface_torch import activate as act


@pytest.fixture
def fake_trainer(tmp_path, monkeypatch):
    """``train_v2`` of a minimal fake checkout, imported fresh and deactivated afterwards."""
    root = write_fake_checkout(str(tmp_path / "arcface_torch"))
    forget_host_modules()
    monkeypatch.syspath_prepend(root)
    trainer = importlib.import_module("train_v2")
    yield trainer
    act.deactivate(trainer)
    forget_host_modules()


@pytest.fixture
def real_pfc_class(arcface_root, monkeypatch, tmp_path):
    """The plugin's Partial FC on the checkout's real ``PartialFC_V2``, in a gloo group of one (CPU)."""
    import torch.distributed as dist
    from _helpers_dist import file_rendezvous, init_group

    init_group(file_rendezvous(tmp_path), 0, 1)
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)   # arcface_torch's hard-coded .cuda()
    forget_host_modules()
    monkeypatch.syspath_prepend(arcface_root)
    from lh2face_plugin.arcface_torch.partial_fc import partial_fc_class

    yield partial_fc_class(importlib.import_module("partial_fc_v2"))
    forget_host_modules()
    dist.destroy_process_group()


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory):
    """``lh2face data synth`` output (4 identities x 4 images, seed 0), made once per session:
    ``(folder, {record key: label})``."""
    import csv

    from lh2face_plugin.cli import main

    out = tmp_path_factory.mktemp("synth") / "data"
    assert main(["data", "synth", str(out), "--identities", "4", "--images-per-id", "4", "--seed", "0"]) == 0
    with open(out / "train_images.csv") as f:
        labels = {int(r["key"]): int(r["label"]) for r in csv.DictReader(f)}
    return str(out), labels
