"""The block-by-block paths of heads/fused.py and heads/blockwise.py against dense references.

Real sizes switch to blocks above millions of entries; here the block size is lowered so
a 7 x 5 matrix takes several blocks (and an uneven last one), and every result is compared
with the same formula written densely (forward, backward, float64 gradcheck).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _helpers_heads import all_cases, build, head_loss, make_inputs

from lh2face_plugin.heads import blockwise, fused
from lh2face_plugin.heads.blockwise import column_blocks, matmul_logsumexp, matmul_rowsum
from lh2face_plugin.heads.fused import margin_logits, masked_rowsum

DT = torch.float64
N, C, D = 7, 5, 3


@pytest.fixture
def small_fused_blocks(monkeypatch):
    monkeypatch.setattr(fused, "BLOCK_ELEMENTS", 2 * C)  # 2 rows per block: [0,2) [2,4) [4,6) [6,7)
    assert list(fused._blocks(N, C)) == [(0, 2), (2, 4), (4, 6), (6, 7)]


def problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    cos = torch.empty(N, C, dtype=DT).uniform_(-1, 1, generator=g)
    # rows 1 and 4 have their target on another shard; targets at the block edges
    pos = torch.tensor([0, 2, 3, 5, 6])
    target = torch.tensor([4, 0, 1, 2, 3])
    return cos, pos, target


# ----------------------------------------------------------------------------------- fused.margin_logits


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


# ----------------------------------------------------------------------------------- fused.masked_rowsum


def dense_masked_rowsum(x, fn, args, pos, target, col_mask):
    y = fn(x, *args)
    if col_mask is not None:
        y = y * col_mask[None, :].to(y.dtype)
    keep = torch.ones_like(x, dtype=torch.bool)
    keep[pos, target] = False
    return torch.where(keep, y, torch.zeros_like(y)).sum(dim=1)


def soft_hinge(x, a):
    return F.softplus(4.0 * (x - a)) * a


@pytest.mark.parametrize("with_mask", [True, False])
def test_masked_rowsum_multi_block_matches_dense(small_fused_blocks, with_mask):
    x, pos, target = problem(3)
    col_mask = torch.tensor([True, False, True, True, False]) if with_mask else None
    upstream = torch.randn(N, dtype=DT, generator=torch.Generator().manual_seed(4))

    def run(fn):
        xx = x.clone().requires_grad_()
        a = torch.tensor(0.3, dtype=DT, requires_grad=True)
        out = fn(xx, soft_hinge, (a,), pos, target, col_mask)
        out.backward(upstream)
        return out.detach(), xx.grad, a.grad

    got = run(masked_rowsum)
    ref = run(dense_masked_rowsum)
    for name, u, v in zip(("rows", "grad x", "grad arg"), got, ref):
        assert torch.allclose(u, v, atol=1e-12, rtol=0), name
    # the target entries (every block has some) are excluded: no gradient there
    assert torch.equal(got[1][pos, target], torch.zeros(len(pos), dtype=DT))


def test_masked_rowsum_multi_block_gradcheck(small_fused_blocks):
    x, pos, target = problem(5)
    mask = torch.tensor([True, True, False, True, True])
    assert torch.autograd.gradcheck(lambda xx, a: masked_rowsum(xx, soft_hinge, (a,), pos, target, mask),
                                    (x.clone().requires_grad_(), torch.tensor(0.2, dtype=DT, requires_grad=True)))


@pytest.mark.parametrize("case", all_cases(), ids=[c[0] for c in all_cases()])
def test_every_head_is_the_same_in_small_fused_blocks(case, monkeypatch):
    """A whole head call (logits, terms, gradients) is independent of the block size."""
    _, name, kw = case
    z, w, labels = make_inputs(n=N, c=C, d=4, seed=6)

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

    dense = run()
    monkeypatch.setattr(fused, "BLOCK_ELEMENTS", C)
    monkeypatch.setattr(blockwise, "BLOCK_ELEMENTS", 2 * N)
    blocked = run()
    for u, v in zip(dense, blocked):
        assert torch.allclose(u, v, atol=1e-12, rtol=1e-12)


# ----------------------------------------------------------------------------------- blockwise


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


def dense_rowsum(a, b, fn, args, index, exclude, col_mask):
    cols = b if index is None else b[index]
    y = fn(a @ cols.t(), *args)
    keep = torch.ones_like(y, dtype=torch.bool)
    if col_mask is not None:
        keep &= col_mask[None, :]
    if exclude is not None:
        rows = torch.nonzero(exclude >= 0).reshape(-1)
        keep[rows, exclude[rows]] = False
    return torch.where(keep, y, torch.zeros_like(y)).sum(dim=1)


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
        monkeypatch.setattr(blockwise, "BLOCK_ELEMENTS", 12)
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


def softplus_threshold(g, t):
    return F.softplus((3.0 * g - t).clamp(-3.0, 3.0))


@pytest.mark.parametrize("opts", sorted(OPTIONS))
@pytest.mark.parametrize("block_elements", [None, 6, 13])
def test_matmul_rowsum_in_column_blocks_matches_dense(opts, block_elements, monkeypatch):
    a, b, index, exclude, col_mask = blockwise_problem(3)
    kw = OPTIONS[opts](index, exclude, col_mask)
    if block_elements is None:
        monkeypatch.setattr(blockwise, "BLOCK_ELEMENTS", 12)
    upstream = torch.randn(a.shape[0], dtype=DT, generator=torch.Generator().manual_seed(2))

    def run(fn):
        aa, bb = a.clone().requires_grad_(), b.clone().requires_grad_()
        t = torch.tensor(0.7, dtype=DT, requires_grad=True)
        out = fn(aa, bb, t)
        out.backward(upstream)
        return out.detach(), aa.grad, bb.grad, t.grad

    got = run(lambda aa, bb, t: matmul_rowsum(aa, bb, softplus_threshold, (t,), block_elements=block_elements, **kw))
    ref = run(lambda aa, bb, t: dense_rowsum(aa, bb, softplus_threshold, (t,), kw.get("index"), kw.get("exclude"),
                                              kw.get("col_mask")))
    for name, u, v in zip(("rows", "grad a", "grad b", "grad arg"), got, ref):
        assert torch.allclose(u, v, atol=1e-12, rtol=1e-12), name


def test_matmul_rowsum_gradcheck_in_blocks():
    a, b, index, exclude, col_mask = blockwise_problem(4)
    assert torch.autograd.gradcheck(
        lambda aa, bb, t: matmul_rowsum(aa, bb, softplus_threshold, (t,), index=index, exclude=exclude,
                                        col_mask=col_mask, block_elements=6),
        (a.requires_grad_(), b.requires_grad_(), torch.tensor(0.4, dtype=DT, requires_grad=True)))
