"""No host sync inside the block loop: the count of syncing operators of a whole step (forward and
backward) does not depend on how many blocks the layer walks (issue 22, item 1)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from _helpers_heads import HEAD_CASES, build
from lh2face_plugin.layers import products
from lh2face_plugin.layers.blockwise import blockwise_head_loss
from lh2face_plugin.layers.dense import dense_head_loss
from lh2face_plugin.layers.syncs import HostSyncCounter

N, C, D = 24, 120, 8
ONE_BLOCK, MANY = 1 << 30, 2 * N   # MANY: 2 columns per block of products, 2 rows per dense block


def _problem(sampled: bool):
    g = torch.Generator().manual_seed(3)
    z = torch.randn(N, D, generator=g) * torch.empty(N, 1).uniform_(3, 14, generator=g)
    w = torch.randn(C, D, generator=g)
    index = torch.sort(torch.randperm(C, generator=g)[: C // 2]).values if sampled else None
    cols = C // 2 if sampled else C
    labels = torch.randint(0, cols, (N,), generator=g)
    labels[1], labels[2], labels[3] = -1, 0, cols - 1
    return z, w, labels, index


def _step(name, layer, sampled, block_elements, monkeypatch):
    monkeypatch.setattr(products, "BLOCK_ELEMENTS", block_elements)
    z, w, labels, index = _problem(sampled)
    head = build(name, HEAD_CASES[name].unit, C, D)
    w = w.requires_grad_()
    x = F.normalize(z).requires_grad_()
    with HostSyncCounter() as syncs:
        if layer == "blockwise":
            loss, _ = blockwise_head_loss(head, x, w, labels, norms=z.norm(dim=1), index=index)
        else:
            wi = w if index is None else w[index]
            wn = F.normalize(wi)
            loss, _ = dense_head_loss(head, (x @ wn.t()).clamp(-1, 1), labels, norms=z.norm(dim=1), embeddings=x,
                                      weights=wn, class_index=index)
        loss.backward()
    return syncs.ops


@pytest.mark.parametrize("sampled", [False, True], ids=["all-classes", "sampled"])
@pytest.mark.parametrize("layer", ["dense", "blockwise"])
@pytest.mark.parametrize("name", sorted(HEAD_CASES))
def test_syncs_do_not_grow_with_the_number_of_blocks(name, layer, sampled, monkeypatch):
    one = _step(name, layer, sampled, ONE_BLOCK, monkeypatch)
    many = _step(name, layer, sampled, MANY, monkeypatch)
    assert many == one, f"{name} on the {layer} layer: syncs with 1 block {dict(one)}, with many {dict(many)}"
    assert sum(one.values()) <= 16, dict(one)


def test_the_counter_sees_the_syncs_a_block_loop_would_make():
    t = torch.arange(10.0)
    with HostSyncCounter() as syncs:
        for c0 in range(0, 10, 2):
            torch.nonzero(t[c0:c0 + 2] > 3)
            float(t[c0])
            t[t > 5]
    assert syncs.ops["nonzero"] == 5 and syncs.ops["_local_scalar_dense"] == 5
    assert syncs.ops["index[bool mask]"] == 5


def test_block_plan_per_device():
    assert products.block_elements_for(torch.device("cpu")) == products.BLOCK_ELEMENTS
    assert products.block_elements_for(torch.device("cpu"), 77) == 77
