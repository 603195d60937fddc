"""The block-by-block paths of the layers against dense references written from the contract.

Real sizes switch to blocks above millions of entries; here the block size is lowered so
a 7 x 5 matrix takes several blocks (and an uneven last one), and every result is compared
with the same formula written densely (forward, backward, float64 gradcheck):
:func:`~lh2face_plugin.layers.dense.margin_logits` (row blocks), the head engine
(:func:`~lh2face_plugin.layers.engine.head_loss`, column blocks, on dense cosines and on
products) and :func:`~lh2face_plugin.layers.products.matmul_logsumexp`.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _helpers_heads import all_cases, build, head_loss, make_inputs

from lh2face_plugin.distributed import DistContext
from lh2face_plugin.heads.base import Head, HeadPlan, LogitSpec, RowTerm
from lh2face_plugin.layers import dense, products
from lh2face_plugin.layers.engine import Columns, head_loss as engine_loss
from lh2face_plugin.layers.dense import margin_logits
from lh2face_plugin.layers.products import column_blocks, matmul_logsumexp

DT = torch.float64
N, C, D = 7, 5, 3


@pytest.fixture
def small_fused_blocks(monkeypatch):
    monkeypatch.setattr(dense, "ROW_BLOCK_ELEMENTS", 2 * C)  # 2 rows per block: [0,2) [2,4) [4,6) [6,7)
    assert list(dense._row_blocks(N, C)) == [(0, 2), (2, 4), (4, 6), (6, 7)]


def problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    cos = torch.empty(N, C, dtype=DT).uniform_(-1, 1, generator=g)
    # rows 1 and 4 have their target on another shard; targets at the block edges
    pos = torch.tensor([0, 2, 3, 5, 6])
    target = torch.tensor([4, 0, 1, 2, 3])
    return cos, pos, target


# ----------------------------------------------------------------------------------- dense.margin_logits


def dense_margin_logits(cos, pos, target, psi, psi_args, scale, thresh, a, q, b):
    k = scale[:, None] if isinstance(scale, torch.Tensor) else scale
    out = k * cos
    if thresh is not None:
        hard = (cos > thresh[:, None].detach()).to(cos.dtype)
        out = out + hard * (a * cos + q * cos * cos + b)
    rows = torch.zeros_like(cos, dtype=torch.bool)
    rows[pos, target] = True
    full = torch.zeros_like(cos)
    full = full.index_put((pos, target), psi(cos[pos, target], *psi_args))
    return torch.where(rows, full, out)


def psi_scaled_margin(c, k, mi):
    return k * (c - mi) - 0.3 * c * c


@pytest.mark.parametrize("with_thresh", [True, False])
def test_margin_logits_multi_block_matches_dense(small_fused_blocks, with_thresh):
    cos, pos, target = problem()
    g = torch.Generator().manual_seed(1)
    scale = torch.empty(N, dtype=DT).uniform_(1, 5, generator=g)
    mi = torch.empty(len(pos), dtype=DT).uniform_(0, 0.5, generator=g)
    thresh = torch.empty(N, dtype=DT).uniform_(-0.5, 0.5, generator=g) if with_thresh else None
    a, q, b = 1.7, 2.5, -0.4
    upstream = torch.randn(N, C, dtype=DT, generator=g)

    def run(fn):
        c = cos.clone().requires_grad_()
        k = scale.clone().requires_grad_()
        m = mi.clone().requires_grad_()
        out = fn(c, pos, target, psi_scaled_margin, (k[pos], m), k, thresh, a, q, b)
        out.backward(upstream)
        return out.detach(), c.grad, k.grad, m.grad

    got = run(lambda c, p, t, psi, args, k, th, a_, q_, b_: margin_logits(c, p, t, psi, args, scale=k, thresh=th,
                                                                           hard_a=a_, hard_b=b_, hard_q=q_))
    ref = run(dense_margin_logits)
    for name, x, y in zip(("logits", "grad cos", "grad scale", "grad psi_args"), got, ref):
        assert torch.allclose(x, y, atol=1e-12, rtol=0), name
    if with_thresh:  # the problem has hard and easy negatives in several blocks
        hard = cos > thresh[:, None]
        assert hard[:2].any() and hard[4:].any() and (~hard).any()


def test_margin_logits_multi_block_gradcheck(small_fused_blocks):
    cos, pos, target = problem(2)
    thresh = torch.zeros(N, dtype=DT)

    def fn(c, k, m):
        return margin_logits(c, pos, target, psi_scaled_margin, (k[pos], m), scale=k, thresh=thresh,
                             hard_a=0.8, hard_b=0.2, hard_q=1.5)

    args = (cos.clone().requires_grad_(), torch.linspace(1, 3, N, dtype=DT).requires_grad_(),
            torch.full((len(pos),), 0.2, dtype=DT, requires_grad=True))
    assert torch.autograd.gradcheck(fn, args)


# ----------------------------------------------------------------------------------- the head engine


class _Described(Head):
    """A head whose plan uses every part of the contract: a per-row scale, thresholds, the
    hard bonus, a target function with arguments, a ready term and two row terms (one over the
    cosines, one over another per-class matrix, with a mask and a learned argument)."""

    def __init__(self, k, thresh, m, t, other, mask):
        super().__init__(check_inputs=False)
        self.k, self.thresh, self.m, self.t, self.other, self.mask = k, thresh, m, t, other, mask

    def plan(self, inp):
        k = self.k

        def psi(c, kt, mi):
            return kt * (c - mi) - 0.3 * c * c

        mask = self.mask if inp.class_index is None else self.mask[inp.class_index]
        terms = {"ready": 0.5 * (self.k[inp.pos] * inp.target_cosine).sum() / max(1, inp.num_rows)}
        rows = {"hinge": RowTerm(lambda g, t: F.softplus(4.0 * (g - t)), 0.7, args=(self.t,)),
                "other": RowTerm(lambda g, t: (g - t) ** 2, 0.2, col_mask=mask, args=(self.t,), columns=self.other)}
        return HeadPlan(LogitSpec(psi, (k[inp.pos], self.m), scale=k, thresh=self.thresh, hard_a=1.7, hard_q=2.5,
                                  hard_b=-0.4), terms, rows)


def naive_loss(x, w, labels, index, k, thresh, m, t, other, mask):
    """The contract written from its equations, entry by entry."""
    cols = w if index is None else w[index]
    oth = other if index is None else other[index]
    msk = mask if index is None else mask[index]
    n, total, p = x.shape[0], x.new_zeros(()), 0
    for i in range(n):
        y = int(labels[i])
        logits = []
        for j in range(cols.shape[0]):
            c = (x[i] @ F.normalize(cols[j], dim=0)).clamp(-1, 1)
            if j == y:
                target = k[i] * (c - m[p]) - 0.3 * c * c
                logits.append(target)
                total = total + 0.5 * k[i] * c / n
                continue
            hard = (c > thresh[i]).to(x.dtype)
            logits.append(k[i] * c + hard * (1.7 * c + 2.5 * c * c - 0.4))
            total = total + 0.7 * F.softplus(4.0 * (c - t)) / n
            if msk[j]:
                total = total + 0.2 * (x[i] @ oth[j] - t) ** 2 / n
        lse = torch.logsumexp(torch.stack(logits), 0)
        if y >= 0:
            total = total + (lse - target) / n
            p += 1
        else:  # the target lives on another shard: in a world of 1 it is in no column
            total = total + lse / n
    return total


@pytest.mark.parametrize("mode", ["dense", "products", "products-cached", "sampled"])
def test_engine_equals_the_naive_contract_in_many_column_blocks(mode):
    g = torch.Generator().manual_seed(11)
    classes = 9
    x = F.normalize(torch.randn(N, D, dtype=DT, generator=g), dim=1)
    w = torch.randn(classes, D, dtype=DT, generator=g)
    index = torch.tensor([7, 0, 3, 8, 5, 1, 2]) if mode == "sampled" else None
    ncols = classes if index is None else len(index)
    labels = torch.randint(0, ncols, (N,), generator=g)
    labels[[1, 4]] = -1  # targets on another shard
    k = torch.empty(N, dtype=DT).uniform_(1, 5, generator=g)
    thresh = torch.empty(N, dtype=DT).uniform_(-0.5, 0.5, generator=g)
    m = torch.empty(int((labels >= 0).sum()), dtype=DT).uniform_(0, 0.5, generator=g)
    t = torch.tensor(0.3, dtype=DT)
    other = torch.randn(classes, D, dtype=DT, generator=g)
    mask = torch.tensor([True, False, True, True, True, False, True, True, True])

    def run(fn):
        xx, ww, kk, mm, tt = (v.clone().requires_grad_() for v in (x, w, k, m, t))
        loss = fn(xx, ww, kk, mm, tt)
        loss.backward()
        return [loss.detach(), xx.grad, ww.grad, kk.grad, mm.grad, tt.grad]

    def engine(xx, ww, kk, mm, tt):
        head = _Described(kk, thresh, mm, tt, other, mask)
        if mode == "dense":
            cos = (xx @ F.normalize(ww, dim=1).t()).clamp(-1, 1)
            inp = head.inputs(labels, classes, embeddings=xx, cosine=cos, ctx=DistContext.single())
            return engine_loss(head, inp, Columns(cosine=cos, block_elements=2 * N), xx)[0]
        cols = Columns(weight=ww, index=index, block_elements=2 * N, cache=mode == "products-cached")
        pos = torch.nonzero(labels >= 0).reshape(-1)
        wt = F.normalize(ww[labels[pos] if index is None else index[labels[pos]]], dim=1)
        tc = (xx[pos] * wt).sum(1).clamp(-1, 1)
        inp = head.inputs(labels, ncols, embeddings=xx, class_index=index, target_cosine=tc,
                          ctx=DistContext.single())
        return engine_loss(head, inp, cols, xx)[0]

    assert len(list(column_blocks(N, ncols, 2 * N))) > 3
    got = run(engine)
    ref = run(lambda xx, ww, kk, mm, tt: naive_loss(xx, ww, labels, index, kk, thresh, mm, tt, other, mask))
    for name, u, v in zip(("loss", "grad x", "grad w", "grad k", "grad psi arg", "grad row-term arg"), got, ref):
        assert torch.allclose(u, v, atol=1e-10, rtol=1e-10), name
    hard = (x @ F.normalize(w, dim=1).t()) > thresh[:, None]
    assert hard.any() and (~hard).any()


def test_engine_gradcheck_in_column_blocks():
    g = torch.Generator().manual_seed(3)
    x = F.normalize(torch.randn(N, D, dtype=DT, generator=g), dim=1)
    w = torch.randn(C, D, dtype=DT, generator=g)
    labels = torch.tensor([0, -1, 2, 3, -1, 4, 1])
    thresh = torch.zeros(N, dtype=DT)
    other, mask = torch.randn(C, D, dtype=DT, generator=g), torch.tensor([True, True, False, True, True])

    def fn(xx, ww, kk, mm, tt):
        head = _Described(kk, thresh, mm, tt, other, mask)
        pos = torch.nonzero(labels >= 0).reshape(-1)
        tc = (xx[pos] * F.normalize(ww[labels[pos]], dim=1)).sum(1)
        inp = head.inputs(labels, C, embeddings=xx, target_cosine=tc, ctx=DistContext.single())
        return engine_loss(head, inp, Columns(weight=ww, block_elements=N), xx)[0]

    args = (x.clone().requires_grad_(), w.clone().requires_grad_(), torch.linspace(1, 3, N, dtype=DT).requires_grad_(),
            torch.full((5,), 0.2, dtype=DT, requires_grad=True), torch.tensor(0.1, dtype=DT, requires_grad=True))
    assert torch.autograd.gradcheck(fn, args)


@pytest.mark.parametrize("case", all_cases(), ids=[c[0] for c in all_cases()])
def test_every_head_is_the_same_in_small_fused_blocks(case, monkeypatch):
    """A whole head call (logits, terms, gradients) is independent of the block size."""
    _, name, kw = case
    z, w, labels = make_inputs(n=N, c=C, d=4, seed=6, off_shard=True)

    def run():
        torch.manual_seed(0)
        head = build(name, kw, C, 4)
        zr, wr = z.clone().requires_grad_(), w.clone().requires_grad_()
        results = []
        for _ in range(2):  # second call: running statistics, memories, thresholds in use
            loss, logits = head_loss(head, zr, wr, labels)
            loss.backward()
            results += [loss.detach(), logits.detach(), zr.grad.clone(), wr.grad.clone()]
        return results

    whole = run()
    monkeypatch.setattr(dense, "ROW_BLOCK_ELEMENTS", C)
    monkeypatch.setattr(products, "BLOCK_ELEMENTS", 2 * N)
    blocked = run()
    for u, v in zip(whole, blocked):
        assert torch.allclose(u, v, atol=1e-12, rtol=1e-12)


# ----------------------------------------------------------------------------------- products.matmul_logsumexp


def dense_lse(a, b, scale, index, exclude, col_mask):
    cols = b if index is None else b[index]
    s = scale * a @ cols.t()
    drop = torch.zeros_like(s, dtype=torch.bool)
    if col_mask is not None:
        drop |= ~col_mask[None, :]
    if exclude is not None:
        rows = torch.nonzero(exclude >= 0).reshape(-1)
        drop[rows, exclude[rows]] = True
    return torch.logsumexp(s.masked_fill(drop, float("-inf")), dim=1)


def blockwise_problem(seed=0, rows=6, classes=9, dim=4):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(rows, dim, dtype=DT, generator=g)
    b = torch.randn(classes, dim, dtype=DT, generator=g)
    index = torch.tensor([7, 0, 3, 8, 5, 1, 2])  # 7 sampled columns, out of order
    exclude = torch.tensor([0, -1, 6, 3, -1, 2])  # column positions in the index
    col_mask = torch.tensor([True, True, False, True, True, True, False])
    return a, b, index, exclude, col_mask


OPTIONS = {
    "plain": lambda idx, exc, mask: dict(),
    "index": lambda idx, exc, mask: dict(index=idx),
    "index+exclude+mask": lambda idx, exc, mask: dict(index=idx, exclude=exc, col_mask=mask),
    "exclude+mask": lambda idx, exc, mask: dict(exclude=exc.clamp(max=8), col_mask=torch.ones(9, dtype=torch.bool)
                                                 .index_fill(0, torch.tensor([4]), False)),
}


@pytest.mark.parametrize("opts", sorted(OPTIONS))
@pytest.mark.parametrize("block_elements", [None, 6, 13])
def test_matmul_logsumexp_in_column_blocks_matches_dense(opts, block_elements, monkeypatch):
    a, b, index, exclude, col_mask = blockwise_problem()
    kw = OPTIONS[opts](index, exclude, col_mask)
    if block_elements is None:  # the module-wide default, lowered
        monkeypatch.setattr(products, "BLOCK_ELEMENTS", 12)
    cols = b.shape[0] if "index" not in kw else len(index)
    assert len(list(column_blocks(a.shape[0], cols, block_elements))) > 2
    upstream = torch.randn(a.shape[0], dtype=DT, generator=torch.Generator().manual_seed(1))

    def run(fn):
        aa, bb = a.clone().requires_grad_(), b.clone().requires_grad_()
        out = fn(aa, bb)
        out.backward(upstream)
        return out.detach(), aa.grad, bb.grad

    got = run(lambda aa, bb: matmul_logsumexp(aa, bb, 2.5, block_elements=block_elements, **kw))
    ref = run(lambda aa, bb: dense_lse(aa, bb, 2.5, kw.get("index"), kw.get("exclude"), kw.get("col_mask")))
    for name, u, v in zip(("lse", "grad a", "grad b"), got, ref):
        assert torch.allclose(u, v, atol=1e-12, rtol=1e-12), name


def test_matmul_logsumexp_row_with_no_column_is_minus_inf_without_nan():
    a, b, _, _, _ = blockwise_problem()
    mask = torch.zeros(b.shape[0], dtype=torch.bool)
    mask[2] = True
    exclude = torch.tensor([2, -1, -1, -1, -1, -1])  # row 0 loses its only column
    aa, bb = a.clone().requires_grad_(), b.clone().requires_grad_()
    lse = matmul_logsumexp(aa, bb, 3.0, exclude=exclude, col_mask=mask, block_elements=6)
    assert lse[0].item() == float("-inf") and torch.isfinite(lse[1:]).all()
    lse[1:].sum().backward()
    assert torch.isfinite(aa.grad).all() and torch.equal(aa.grad[0], torch.zeros(a.shape[1], dtype=DT))


def test_matmul_logsumexp_gradcheck_in_blocks():
    a, b, index, exclude, col_mask = blockwise_problem(2)
    assert torch.autograd.gradcheck(
        lambda aa, bb: matmul_logsumexp(aa, bb, 1.5, index=index, exclude=exclude, col_mask=col_mask,
                                        block_elements=6),
        (a.requires_grad_(), b.requires_grad_()))
