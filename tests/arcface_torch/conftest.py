import importlib

import pytest

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
