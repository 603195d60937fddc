"""Mixed precision as users run it (issue 22, items 2 and 5): only the products in half, the rest in
float32, the forward and the backward's recomputation on the same values; half inputs accepted or
refused in one line; a NaN step skipped by a GradScaler instead of a crash."""
from __future__ import annotations

import importlib.util
import os

import pytest
import torch
import torch.nn.functional as F

from _helpers_heads import HEAD_CASES, build
from lh2face_plugin.layers.blockwise import blockwise_head_loss
from lh2face_plugin.layers.dense import dense_head_loss

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _precision_script():
    spec = importlib.util.spec_from_file_location("precision_bench", os.path.join(ROOT, "benchmarks", "precision.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_head_and_layer_in_mixed_precision_is_within_the_table_tolerance(tmp_path):
    bench = _precision_script()
    out = tmp_path / "rows.json"
    rows = bench.table(torch.device("cpu"), rows=24, classes=300, dim=16, json_path=str(out), block_elements=96)
    assert {r["precision"] for r in rows} == {"fp32", "bf16-autocast", "fp16-product"}
    bad = [r for r in rows if not r["ok"]]
    assert not bad, bench.format_table(bad)
    half = [r for r in rows if r["precision"] != "fp32"]
    assert all(r["grad"] > 0 for r in half), "a half-precision row equal to float32: the products were not in half"
    import json

    assert json.loads(out.read_text())["rows"] == rows


def _problem(n=24, c=300, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(n, d, generator=g), dim=1) * torch.empty(n, 1).uniform_(10, 40, generator=g)
    w = torch.randn(c, d, generator=g) * 0.05
    labels = torch.randint(0, c, (n,), generator=g)
    labels[0], labels[1], labels[2] = -1, 0, c - 1
    return z, w, labels


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", ["mv-softmax", "sv-softmax", "lh2face", "arcface", "uss"])
def test_blockwise_half_products_equal_the_dense_layer_on_the_same_half_cosines(name, dtype):
    """The blockwise layer recomputes each block in the backward; it must differentiate the function its
    forward computed (the same half products: MV/SV's hard-negative indicator included), which the dense
    layer, given those cosines once, does by construction."""
    z, w, labels = _problem()
    c, d = w.shape[0], w.shape[1]
    kwargs = HEAD_CASES[name].unit
    x1, w1 = F.normalize(z).requires_grad_(), w.clone().requires_grad_()
    loss1, _ = blockwise_head_loss(build(name, kwargs, c, d), x1, w1, labels, norms=z.norm(dim=1), matmul_dtype=dtype,
                                   block_elements=4 * len(labels))
    loss1.backward()
    x2, w2 = F.normalize(z).requires_grad_(), w.clone().requires_grad_()
    wn = F.normalize(w2)
    cos = torch.mm(x2.to(dtype), wn.to(dtype).t()).float().clamp(-1, 1)
    loss2, _ = dense_head_loss(build(name, kwargs, c, d), cos, labels, norms=z.norm(dim=1), embeddings=x2, weights=wn)
    loss2.backward()
    assert torch.allclose(loss1, loss2, rtol=1e-5, atol=1e-6)
    for g1, g2 in ((x1.grad, x2.grad), (w1.grad, w2.grad)):
        err = float((g1 - g2).abs().max() / g2.abs().max())
        assert err < 2e-2, f"max entry error {err:.2e} relative to the largest gradient entry"


@pytest.mark.parametrize("name", sorted(HEAD_CASES))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_embeddings_are_accepted_by_both_layers(name, dtype):
    z, w, labels = _problem()
    c, d = w.shape
    kwargs = HEAD_CASES[name].unit
    x = F.normalize(z).to(dtype).requires_grad_()
    loss, _ = blockwise_head_loss(build(name, kwargs, c, d), x, w, labels, norms=z.norm(dim=1).to(dtype))
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and x.grad.dtype == dtype
    ref, _ = blockwise_head_loss(build(name, kwargs, c, d), x.detach().float(), w, labels,
                                 norms=z.norm(dim=1).to(dtype).float(), matmul_dtype=dtype)
    assert torch.allclose(loss, ref, rtol=1e-5, atol=1e-6)
    wn = F.normalize(w)
    cos = (x.detach().float() @ wn.t()).clamp(-1, 1).to(dtype)
    dense, _ = dense_head_loss(build(name, kwargs, c, d), cos, labels, norms=z.norm(dim=1).to(dtype),
                               embeddings=x.detach(), weights=wn.to(dtype))
    assert dense.dtype == torch.float32 and torch.isfinite(dense)


def test_half_class_proxies_are_refused_in_one_line():
    z, w, labels = _problem()
    head = build("arcface", HEAD_CASES["arcface"].unit, *w.shape)
    with pytest.raises(TypeError, match=r"float32 or float64, got torch.float16") as err:
        blockwise_head_loss(head, F.normalize(z), w.half(), labels)
    assert "\n" not in str(err.value)
    with pytest.raises(TypeError, match="matmul_dtype must be torch.float16, torch.bfloat16 or None"):
        blockwise_head_loss(head, F.normalize(z), w, labels, matmul_dtype=torch.float64)
    with pytest.raises(ValueError, match="nonfinite must be one of"):
        blockwise_head_loss(head, F.normalize(z), w, labels, nonfinite="skip")


@pytest.mark.parametrize("layer", ["dense", "blockwise"])
@pytest.mark.parametrize("name", ["lh2face", "mv-softmax", "uss", "arcface"])
def test_a_nan_step_is_skipped_by_the_grad_scaler(name, layer):
    """nonfinite='nan': the loss is NaN, the backward runs, GradScaler finds the inf, skips the step and
    lowers its scale; the next finite step is taken."""
    z, w, labels = _problem()
    c, d = w.shape
    head = build(name, HEAD_CASES[name].unit, c, d)
    emb = torch.nn.Parameter(z.clone())
    proxies = torch.nn.Parameter(w.clone())
    opt = torch.optim.SGD([emb, proxies], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)

    def step(bad: bool):
        opt.zero_grad()
        e = emb.clone()
        if bad:
            e = e.index_put((torch.tensor([5]),), torch.full((1, d), float("nan")))
        x = F.normalize(e)
        if layer == "blockwise":
            loss, _ = blockwise_head_loss(head, x, proxies, labels, norms=e.norm(dim=1), nonfinite="nan")
        else:
            wn = F.normalize(proxies)
            loss, _ = dense_head_loss(head, (x @ wn.t()).clamp(-1, 1), labels, norms=e.norm(dim=1), embeddings=x,
                                      weights=wn, nonfinite="nan")
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss

    before = proxies.detach().clone()
    assert torch.isnan(step(True))
    assert torch.equal(proxies.detach(), before) and scaler.get_scale() == 512.0
    assert torch.isfinite(step(False))
    assert not torch.equal(proxies.detach(), before)
    with pytest.raises(FloatingPointError, match="non-finite embeddings at row 5"):
        x = F.normalize(z.index_put((torch.tensor([5]),), torch.full((1, d), float("nan"))))
        blockwise_head_loss(head, x, w, labels, norms=z.norm(dim=1))
