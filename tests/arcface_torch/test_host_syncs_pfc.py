"""One step of the plugin's Partial FC on arcface_torch's real PartialFC_V2 (dense and blockwise, sampled
and not) issues the same host-syncing operators whatever the number of blocks (issue 22, item 1)."""
from __future__ import annotations

import pytest
import torch

import lh2face_plugin
from lh2face_plugin.layers import products
from lh2face_plugin.layers.syncs import HostSyncCounter

pytestmark = pytest.mark.arcface_torch

D, C, B = 16, 300, 24


def _step(pfc_class, name, blockwise, sample_rate, block_elements, monkeypatch):
    monkeypatch.setattr(products, "BLOCK_ELEMENTS", block_elements)
    torch.manual_seed(0)
    head = lh2face_plugin.build_head(name)
    pfc = pfc_class(head, D, C, sample_rate, False, blockwise=blockwise)
    x = (torch.randn(B, D) * 8).requires_grad_()
    labels = torch.randint(0, C, (B,))
    with HostSyncCounter() as syncs:
        pfc(x, labels).backward()
    return syncs.ops


@pytest.mark.parametrize("sample_rate", [1.0, 0.5])
@pytest.mark.parametrize("blockwise", [False, True], ids=["dense", "blockwise"])
@pytest.mark.parametrize("name", ["arcface", "lh2face", "mv-softmax", "uss"])
def test_partial_fc_step_syncs_do_not_grow_with_blocks(real_pfc_class, name, blockwise, sample_rate, monkeypatch):
    one = _step(real_pfc_class, name, blockwise, sample_rate, 1 << 30, monkeypatch)
    many = _step(real_pfc_class, name, blockwise, sample_rate, 2 * B, monkeypatch)
    assert many == one, f"syncs with 1 block {dict(one)}, with many {dict(many)}"
