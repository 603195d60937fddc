"""The blockwise layer equals the dense one for every head, on 1, 2 and 3 gloo ranks, full and sampled."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _helpers_blockwise import run_blockwise
from _helpers_dist import sharded_cross_entropy
from _helpers_heads import all_cases, build, make_inputs

from lh2face_plugin.distributed import DistContext
from lh2face_plugin.layers.blockwise import blockwise_head_loss
from lh2face_plugin.memory import peak_bytes

CASES = all_cases()
TOL = 1e-5


@pytest.fixture(scope="module", params=[(1, False), (2, False), (3, False), (1, True), (2, True)],
                ids=["world1", "world2", "world3", "world1-cached", "world2-cached"])
def blockwise_results(request, tmp_path_factory):
    world, cache = request.param
    return world, run_blockwise(world, CASES, str(tmp_path_factory.mktemp(f"b{world}{int(cache)}")), cache)


@pytest.mark.parametrize("mode", ["full", "sampled"])
@pytest.mark.parametrize("case_id", [c[0] for c in CASES])
def test_blockwise_equals_dense(blockwise_results, case_id, mode):
    world, results = blockwise_results
    diff = results[f"{case_id}|{mode}"]
    assert diff["scale"] > 1e-3, "degenerate problem: nothing to compare"
    for key in ("loss", "grad_z", "grad_w", "state"):
        assert diff[key] <= TOL, (world, case_id, mode, key, diff)


def _dense(head, z, w, labels):
    x, wn = F.normalize(z, dim=1), F.normalize(w, dim=1)
    res = head.evaluate((x @ wn.t()).clamp(-1, 1), labels, norms=z.norm(dim=1), embeddings=x, weights=wn)
    loss = sharded_cross_entropy(res.logits, labels, DistContext.single())
    return loss + (res.extra if res.extra is not None else 0), res


@pytest.mark.parametrize("case", [c for c in CASES if c[0] in ("lh2face", "uss", "mv-softmax")], ids=lambda c: c[0])
def test_parts_are_the_dense_terms(case):
    _, name, kw = case
    z, w, labels = make_inputs(n=10, c=7, d=5, seed=1)
    dense_head, block_head = build(name, kw, 7, 5), build(name, kw, 7, 5)
    loss_d, res = _dense(dense_head, z, w, labels)
    loss_b, parts = blockwise_head_loss(block_head, F.normalize(z, dim=1), w, labels, norms=z.norm(dim=1),
                                        block_elements=9)
    assert torch.allclose(loss_d, loss_b, atol=1e-10)
    for k, v in res.log_values().items():
        assert torch.allclose(parts[k], v, atol=1e-10), k
    assert set(parts) == set(res.log_values()) | {"ce"}


def test_cosines_beyond_one_pass_no_gradient_like_the_dense_clamp():
    # rows equal to their proxies give cos = 1 up to rounding: the clamp must behave as in the dense path
    w = F.normalize(torch.randn(6, 4, dtype=torch.float64), dim=1)
    labels = torch.tensor([0, 1, 2, 3])
    z = (w[labels] * 7.0).requires_grad_()
    head = build("arcface", dict(s=8.0, m=0.5, straight_through=False), 6, 4)
    loss_d, _ = _dense(head, z, w, labels)
    (gd,) = torch.autograd.grad(loss_d, z)
    zb = z.detach().clone().requires_grad_()
    loss_b, _ = blockwise_head_loss(head, F.normalize(zb, dim=1), w, labels, block_elements=5)
    (gb,) = torch.autograd.grad(loss_b, zb)
    assert torch.allclose(loss_d, loss_b, atol=1e-12) and torch.allclose(gd, gb, atol=1e-10)


def test_gradcheck_through_the_blocks():
    z, w, labels = make_inputs(n=5, c=6, d=3, seed=2)
    head = build("lh2face", dict(kappa_min=2.0, kappa_max=12.0, lambda_pns=0.5, tau_pns=0.1, lambda_pp=0.0,
                                 lambda_pps=0.1, vmf_dim=8), 6, 3)
    with torch.no_grad():
        blockwise_head_loss(head, F.normalize(z, dim=1), w, labels, norms=z.norm(dim=1))
    head.eval()

    def fn(z_, w_):
        return blockwise_head_loss(head, F.normalize(z_, dim=1), w_, labels, norms=z_.norm(dim=1),
                                   block_elements=4)[0]

    assert torch.autograd.gradcheck(fn, (z.clone().requires_grad_(), w.clone().requires_grad_()), atol=1e-6)


def test_the_backward_holds_one_proxy_gradient_and_no_full_logits():
    n, c, d, block = 64, 6000, 32, 64 * 100
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(c, d) * 0.01)
    emb = torch.randn(n, d, requires_grad=True)
    labels = torch.randint(0, c, (n,))
    head = build("lh2face", dict(pp_scope="batch"), c, d)

    def blockwise():
        loss, _ = blockwise_head_loss(head, F.normalize(emb, dim=1), weight, labels, norms=emb.norm(dim=1),
                                      block_elements=block)
        loss.backward()
        weight.grad = emb.grad = None

    def dense():
        x, w = F.normalize(emb, dim=1), F.normalize(weight, dim=1)
        res = head.evaluate((x @ w.t()).clamp(-1, 1), labels, norms=emb.norm(dim=1), embeddings=x, weights=w)
        (sharded_cross_entropy(res.logits, labels, DistContext.single()) + res.extra).backward()
        weight.grad = emb.grad = None

    grad_bytes, logits_bytes, block_bytes = c * d * 4, n * c * 4, block * 4
    blockwise()
    got, ref = peak_bytes(blockwise), peak_bytes(dense)
    assert got < 1.5 * grad_bytes + 8 * block_bytes, (got, grad_bytes)                 # one [C, D] buffer
    assert got < grad_bytes + logits_bytes / 2                                         # never [N, C]
    assert ref > grad_bytes + 2 * logits_bytes                                         # the dense twin does
