"""Raw features of the evaluation set: the cache is reused only when whole, NaN outputs stop."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lh2face_plugin.bench.features import raw_features


class _Net(torch.nn.Module):
    def __init__(self, nan_at=None):
        super().__init__()
        self.fc = torch.nn.Linear(3, 8)
        self.nan_at = nan_at
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        out = self.fc(x.mean(dim=(2, 3)))
        if self.nan_at is not None:
            out[self.nan_at] = float("nan")
        return out


def test_cache_is_reused_only_when_whole(small_evalset, tmp_path):
    cache = str(tmp_path / "f.npy")
    net = _Net()
    first = raw_features(net, small_evalset, cache=cache, model_key="k", progress=False)
    assert first.shape == (len(small_evalset), 8) and net.calls > 0
    net.calls = 0
    assert np.array_equal(raw_features(net, small_evalset, cache=cache, model_key="k", progress=False), first)
    assert net.calls == 0, "a whole cache with the same key is reused"
    with open(cache, "r+b") as fh:  # truncated by a crash or a full disk
        fh.truncate(200)
    again = raw_features(net, small_evalset, cache=cache, model_key="k", progress=False)
    assert net.calls > 0 and np.array_equal(again, first)
    np.save(cache, first[:5])  # another shape under the same key
    net.calls = 0
    assert raw_features(net, small_evalset, cache=cache, model_key="k", progress=False).shape == first.shape
    assert net.calls > 0


def test_nan_embeddings_stop_with_the_image_named(small_evalset, tmp_path):
    with pytest.raises(FloatingPointError, match="evaluation image 2 is NaN/Inf"):
        raw_features(_Net(nan_at=2), small_evalset, cache=str(tmp_path / "f.npy"), model_key="k", progress=False)
    assert not (tmp_path / "f.npy").exists()
