"""Heads against naive references written from the papers' equations (python loops, float64).

Each reference builds the logits element by element from the equation (the reference
forms: ``cos theta cos m - sin theta sin m``, ``statistics.stdev``, mpmath's Bessel function)
rather than from the package's helpers, and the cross-entropy by hand; forward values and
the gradients autograd derives from the loops are compared with the head's.
"""
from __future__ import annotations

import math
import statistics

import pytest
import torch
import torch.nn.functional as F
from _helpers_heads import log_cn_mpmath

import lh2face_plugin

DT = torch.float64


def cross_entropy(rows, labels):
    """mean_i -log softmax(rows_i)[y_i], written out."""
    total = 0.0
    for row, y in zip(rows, labels.tolist()):
        total = total + (torch.log(sum(torch.exp(v) for v in row)) - row[y])
    return total / len(rows)


def stack(rows):
    return torch.stack([torch.stack(list(r)) for r in rows])


def cos_of_angle_sum(c, m):
    """cos(theta + m) from c = cos(theta) in the reference codes' form."""
    m = torch.as_tensor(m, dtype=DT)
    return c * torch.cos(m) - torch.sqrt(1.0 - c * c) * torch.sin(m)


def grads(loss, *inputs):
    return torch.autograd.grad(loss, inputs, allow_unused=True)


# ----------------------------------------------------------------------------------- AdaFace


def naive_adaface_rows(cos, labels, norms, mu, sigma, s, m, h, eps=1e-3):
    rows = []
    for i in range(cos.shape[0]):
        a = min(max(float(norms[i]), 1e-3), 100.0)
        nh = max(-1.0, min(1.0, h * (a - mu) / (sigma + eps)))
        row = []
        for j in range(cos.shape[1]):
            c = cos[i, j]
            if j == int(labels[i]):
                theta = torch.acos(c)
                angle = torch.clamp(theta + (-m * nh), eps, math.pi - eps)
                row.append(s * (torch.cos(angle) - (m * nh + m)))
            else:
                row.append(s * c)
        rows.append(row)
    return rows


def adaface_problem(step=0):
    g = torch.Generator().manual_seed(step)
    n, c = 8, 5
    cos = torch.empty(n, c, dtype=DT).uniform_(-0.95, 0.95, generator=g)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    # with h = 0.9: row 0 has norm_hat = -1, row 1 norm_hat = +1 (both clipped), the others inside
    norms = torch.tensor([10.0, 34.0, 20.0, 21.0, 22.0, 19.0, 18.0, 20.0], dtype=DT) * (1 + 0.1 * step)
    if step == 2:
        norms[6] = 150.0  # clipped to 100 for the statistics
    # row 1: high norm on an almost aligned target: theta - m < eps, clamped
    cos[1, 1] = 0.995
    # row 0: low norm on an almost opposite target: theta + m > pi - eps, clamped
    cos[0, 0] = -0.99
    return cos, labels, norms


def test_adaface_logits_gradients_and_statistics_match_the_equations():
    s, m, h, momentum = 10.0, 0.4, 0.9, 0.2
    head = lh2face_plugin.build_head("adaface", s=s, m=m, h=h, momentum=momentum)
    mu = sigma = None
    for step in range(3):
        cos, labels, norms = adaface_problem(step)
        clipped = [min(max(float(v), 1e-3), 100.0) for v in norms]
        batch_mu, batch_sigma = statistics.fmean(clipped), statistics.stdev(clipped)
        if step == 0:  # the first batch initialises the averages
            mu, sigma = batch_mu, batch_sigma
        else:
            mu, sigma = (1 - momentum) * mu + momentum * batch_mu, (1 - momentum) * sigma + momentum * batch_sigma

        c1 = cos.clone().requires_grad_()
        n1 = norms.clone().requires_grad_()
        out = head.evaluate(c1, labels, norms=n1)
        loss = F.cross_entropy(out.logits, labels)
        c2 = cos.clone().requires_grad_()
        rows = naive_adaface_rows(c2, labels, norms, mu, sigma, s, m, h)
        ref_loss = cross_entropy(rows, labels)

        assert head.running_mean.item() == pytest.approx(mu, rel=1e-6)
        assert head.running_std.item() == pytest.approx(sigma, rel=1e-6)
        assert out.stats["norm_mean"].item() == pytest.approx(mu, rel=1e-6)
        assert torch.allclose(out.logits, stack(rows), atol=1e-5, rtol=0)
        assert loss.item() == pytest.approx(ref_loss.item(), abs=1e-6)
        (g_cos, g_norm), (g_ref,) = grads(loss, c1, n1), grads(ref_loss, c2)
        assert torch.allclose(g_cos, g_ref, atol=1e-5, rtol=0)
        assert g_norm is None or not g_norm.any()  # the margin carries no gradient to the norm
        if step == 0:  # the two clamped targets: no gradient through theta + g_angle outside [eps, pi - eps]
            assert g_cos[0, 0] == 0 and g_cos[1, 1] == 0 and g_cos[2, 2] != 0


def test_adaface_clamps_and_margin_forms():
    """norm_hat = -1, 0, +1 give ArcFace, CosFace and s(cos(theta - m) - 2m)."""
    s, m = 4.0, 0.4
    head = lh2face_plugin.build_head("adaface", s=s, m=m, h=1.0)
    head.running_mean.fill_(20.0)
    head.running_std.fill_(5.0 - 1e-3)  # sigma + eps = 5
    head.num_batches_tracked.fill_(1)
    head.eval()
    c = torch.tensor([[0.6, 0.1], [0.6, 0.1], [0.6, 0.1], [0.999999, 0.1]], dtype=DT)
    labels = torch.tensor([0, 0, 0, 0])
    norms = torch.tensor([10.0, 20.0, 30.0, 40.0], dtype=DT)  # norm_hat -1 (clipped), 0, +1 (clipped twice)
    logits = head.evaluate(c, labels, norms=norms).logits
    theta = math.acos(0.6)
    assert logits[0, 0].item() == pytest.approx(s * math.cos(theta + m), abs=1e-9)
    assert logits[1, 0].item() == pytest.approx(s * (0.6 - m), abs=1e-9)
    assert logits[2, 0].item() == pytest.approx(s * (math.cos(theta - m) - 2 * m), abs=1e-9)
    assert logits[3, 0].item() == pytest.approx(s * (math.cos(1e-3) - 2 * m), abs=1e-9)  # theta - m < eps
    assert torch.equal(logits[:, 1], torch.full((4,), s * 0.1, dtype=DT))
    assert head.running_mean.item() == 20.0 and int(head.num_batches_tracked) == 1  # eval: frozen


def test_adaface_degenerate_batches_leave_statistics_alone():
    head = lh2face_plugin.build_head("adaface", s=4.0)
    cos, labels, norms = adaface_problem()
    head.evaluate(cos, labels, norms=norms)
    state = {k: v.clone() for k, v in head.state_dict().items() if isinstance(v, torch.Tensor)}
    for n in (0, 1):  # an empty batch, and a single row (no standard deviation)
        out = head.evaluate(cos[:n], labels[:n], norms=norms[:n])
        assert out.logits.shape == (n, 5) and torch.isfinite(out.logits).all()
        for k, v in head.state_dict().items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(v, state[k]), (n, k)
    fresh = lh2face_plugin.build_head("adaface", s=4.0)
    out = fresh.evaluate(cos[:1], labels[:1], norms=norms[:1])  # nothing learned yet, one row: norm_hat = 0, CosFace
    assert out.logits[0, 0].item() == pytest.approx(4.0 * (cos[0, 0].item() - 0.4), abs=1e-9)
    assert int(fresh.num_batches_tracked) == 0


# ----------------------------------------------------------------------------------- MagFace


def naive_magface(cos, labels, norms, s, l_a, u_a, l_m, u_m, lambda_g, easy_margin):
    rows, g_total = [], 0.0
    for i in range(cos.shape[0]):
        a = torch.clamp(norms[i], l_a, u_a)
        margin = (u_m - l_m) / (u_a - l_a) * (a - l_a) + l_m
        g_total = g_total + (a / u_a ** 2 + 1.0 / a)
        row = []
        for j in range(cos.shape[1]):
            c = cos[i, j]
            if j == int(labels[i]):
                if easy_margin:
                    value = cos_of_angle_sum(c, margin) if c > 0 else c
                else:
                    threshold = torch.cos(math.pi - margin)
                    value = cos_of_angle_sum(c, margin) if c > threshold else c - torch.sin(math.pi - margin) * margin
                row.append(s * value)
            else:
                row.append(s * c)
        rows.append(row)
    return rows, lambda_g * g_total / cos.shape[0]


@pytest.mark.parametrize("easy_margin", [True, False])
def test_magface_logits_regulariser_and_gradients_match_the_equations(easy_margin):
    kw = dict(s=12.0, l_a=10.0, u_a=110.0, l_m=0.45, u_m=0.8, lambda_g=35.0, easy_margin=easy_margin)
    g = torch.Generator().manual_seed(1)
    cos = torch.empty(8, 5, dtype=DT).uniform_(-0.9, 0.9, generator=g)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    norms = torch.tensor([5.0, 20.0, 60.0, 109.0, 130.0, 40.0, 75.0, 12.0], dtype=DT)  # two outside [l_a, u_a]
    cos[1, 1] = -0.3     # easy margin: no margin (c <= 0); threshold: margin (c > cos(pi - m))
    cos[2, 2] = -0.95    # threshold: the fallback c - m sin m (c < cos(pi - m) = -cos m)
    cos[6, 1] = 0.97
    cos[5, 0] = 0.5
    c1, n1 = cos.clone().requires_grad_(), norms.clone().requires_grad_()
    head = lh2face_plugin.build_head("magface", **kw)
    out = head.evaluate(c1, labels, norms=n1)
    loss = F.cross_entropy(out.logits, labels) + out.extra
    c2, n2 = cos.clone().requires_grad_(), norms.clone().requires_grad_()
    rows, ref_g = naive_magface(c2, labels, n2, **kw)
    ref_loss = cross_entropy(rows, labels) + ref_g

    assert set(out.terms) == {"g"}
    assert out.terms["g"].item() == pytest.approx(ref_g.item(), rel=1e-12)
    assert torch.allclose(out.logits, stack(rows), atol=1e-9, rtol=0)
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-12)
    (gc, gn), (rc, rn) = grads(loss, c1, n1), grads(ref_loss, c2, n2)
    assert torch.allclose(gc, rc, atol=1e-9, rtol=0)
    assert torch.allclose(gn, rn, atol=1e-12, rtol=0)
    assert gn[0] == 0 and gn[4] == 0 and gn[3] != 0  # clamped magnitudes get no gradient
    # the margin is differentiable in a: without the regulariser the norms still get a gradient
    plain = lh2face_plugin.build_head("magface", **dict(kw, lambda_g=0.0))
    n3 = norms.clone().requires_grad_()
    F.cross_entropy(plain.evaluate(cos, labels, norms=n3).logits, labels).backward()
    assert n3.grad[5] > 0  # a larger margin raises the loss
    expected_a = norms.clamp(10.0, 110.0)
    assert out.stats["magnitude"].item() == pytest.approx(expected_a.mean().item())
    assert out.stats["margin"].item() == pytest.approx((0.45 + 0.35 * (expected_a - 10) / 100).mean().item())


def test_magface_warns_below_the_lambda_g_bound():
    with pytest.warns(UserWarning, match=r"lambda_g=20 is below 22\.59"):
        lh2face_plugin.build_head("magface", lambda_g=20.0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lh2face_plugin.build_head("magface")  # the paper's 35 is above the bound


# ----------------------------------------------------------------------------------- CurricularFace


def naive_curricular_rows(cos, labels, t, s, m):
    rows = []
    for i in range(cos.shape[0]):
        y = int(labels[i])
        c_y = cos[i, y]
        boundary = float(cos_of_angle_sum(c_y.detach(), m))
        row = []
        for j in range(cos.shape[1]):
            c = cos[i, j]
            if j == y:
                value = cos_of_angle_sum(c, m) if c > math.cos(math.pi - m) else c - math.sin(math.pi - m) * m
            elif float(c.detach()) > boundary:
                value = c * (t + c)
            else:
                value = c
            row.append(s * value)
        rows.append(row)
    return rows


def test_curricularface_logits_t_and_gradients_match_the_equations():
    s, m, alpha = 10.0, 0.5, 0.7
    head = lh2face_plugin.build_head("curricularface", s=s, m=m, alpha=alpha)
    t = 0.0
    hard_seen = 0
    for step in range(3):
        g = torch.Generator().manual_seed(10 + step)
        cos = torch.empty(9, 6, dtype=DT).uniform_(-0.9, 0.9, generator=g)
        labels = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1, 2])
        cos[3, 3] = -0.95  # theta + m > pi: the fallback c - m sin m
        t = alpha * t + (1 - alpha) * statistics.fmean(float(cos[i, labels[i]]) for i in range(9))
        c1, c2 = cos.clone().requires_grad_(), cos.clone().requires_grad_()
        out = head.evaluate(c1, labels)
        loss = F.cross_entropy(out.logits, labels)
        rows = naive_curricular_rows(c2, labels, t, s, m)
        ref_loss = cross_entropy(rows, labels)
        assert head.t.item() == pytest.approx(t, rel=1e-6) and out.stats["t"].item() == pytest.approx(t, rel=1e-6)
        assert torch.allclose(out.logits, stack(rows), atol=1e-5, rtol=0)
        assert loss.item() == pytest.approx(ref_loss.item(), abs=1e-6)
        assert torch.allclose(grads(loss, c1)[0], grads(ref_loss, c2)[0], atol=1e-6, rtol=0)
        hard_seen += sum(float(cos[i, j]) > math.cos(math.acos(float(cos[i, labels[i]])) + m)
                         for i in range(9) for j in range(6) if j != labels[i])
    assert hard_seen > 5


def test_curricularface_t_frozen_in_eval_and_by_empty_batches():
    head = lh2face_plugin.build_head("curricularface")
    cos = torch.rand(4, 3, dtype=DT)
    labels = torch.tensor([0, 1, 2, 0])
    head(cos, labels)
    t = head.t.item()
    assert t == pytest.approx(0.01 * cos[torch.arange(4), labels].mean().item(), rel=1e-6)  # t starts at 0
    head(cos[:0], labels[:0])
    assert head.t.item() == t
    head.eval()
    head(cos, labels)
    assert head.t.item() == t


# ----------------------------------------------------------------------------------- LH2Face terms


def lh2face_problem():
    g = torch.Generator().manual_seed(4)
    n, c, d = 7, 6, 5
    z = torch.randn(n, d, generator=g, dtype=DT) * torch.tensor([[3.0], [8.0], [14.0], [30.0], [5.0], [9.0], [11.0]],
                                                                  dtype=DT)
    w = F.normalize(torch.randn(c, d, generator=g, dtype=DT), dim=1)
    labels = torch.tensor([0, 2, 2, 4, 5, 0, 3])
    return z, w, labels


@pytest.mark.parametrize("pp_scope", ["shard", "batch"])
def test_lh2face_proxy_terms_match_the_equations(pp_scope):
    kw = dict(kappa_min=4.0, kappa_max=20.0, vmf_dim=32, lambda_pps=0.3, lambda_pns=0.7, lambda_pp=0.5,
              tau_pns=0.1, s_pp=6.0, pp_scope=pp_scope)
    z, w, labels = lh2face_problem()
    head = lh2face_plugin.build_head("lh2face", **kw)
    x = F.normalize(z, dim=1)
    cos = x @ w.t()
    out = head.evaluate(cos, labels, norms=z.norm(dim=1), embeddings=x, weights=w)
    n, c = cos.shape
    kappa = [min(max(float(v), 4.0), 20.0) for v in z.norm(dim=1)]

    pps = sum(-(log_cn_mpmath(32, kappa[i]) + kappa[i] * float(cos[i, labels[i]])) for i in range(n)) / n
    pns = sum(max(0.0, float(cos[i, j]) - 0.1) for i in range(n) for j in range(c) if j != labels[i]) / n
    positives = sorted(set(labels.tolist()))
    others = {"shard": list(range(c)), "batch": positives}[pp_scope]
    soft_max = []
    for u in positives:
        sims = [6.0 * float(w[u] @ w[j]) for j in others if j != u]
        if sims:
            soft_max.append(math.log(sum(math.exp(v) for v in sims)) / 6.0)
    pp = sum(soft_max) / len(soft_max)

    assert set(out.terms) == {"pps", "pns", "pp"}
    assert out.terms["pps"].item() == pytest.approx(0.3 * pps, rel=1e-5)
    assert out.terms["pns"].item() == pytest.approx(0.7 * pns, rel=1e-12)
    assert out.terms["pp"].item() == pytest.approx(0.5 * pp, rel=1e-12)
    assert out.stats["mu"].item() == pytest.approx(statistics.fmean(kappa), rel=1e-6)


def test_lh2face_pp_batch_scope_with_one_positive_proxy_is_zero():
    z, w, labels = lh2face_problem()
    labels = torch.zeros_like(labels)
    head = lh2face_plugin.build_head("lh2face", pp_scope="batch", lambda_pp=1.0)
    x = F.normalize(z, dim=1)
    out = head.evaluate(x @ w.t(), labels, norms=z.norm(dim=1), embeddings=x, weights=w)
    assert out.terms["pp"].item() == 0.0


# ----------------------------------------------------------------------------------- USS


def uss_problem():
    g = torch.Generator().manual_seed(7)
    n, c, d = 7, 6, 5
    x = F.normalize(torch.randn(n, d, generator=g, dtype=DT), dim=1)
    w = F.normalize(torch.randn(c, d, generator=g, dtype=DT), dim=1)
    memory = F.normalize(torch.randn(c, d, generator=g, dtype=DT), dim=1)
    filled = torch.tensor([True, False, True, True, True, False])
    labels = torch.tensor([0, 1, 2, 3, 0, 5, 2])
    return x, w, memory, filled, labels


def naive_uss(x, memory, filled, labels, gamma, m, b):
    def softplus_clamped(v):
        v = min(max(v, -gamma), gamma)
        return math.log1p(math.exp(v))

    total = 0.0
    for i in range(x.shape[0]):
        y = int(labels[i])
        if filled[y]:
            total += softplus_clamped(-gamma * (float(x[i] @ memory[y]) - m) + b)
        for j in range(memory.shape[0]):
            if j != y and filled[j]:
                total += softplus_clamped(gamma * float(x[i] @ memory[j]) - b)
    return total / x.shape[0]


def test_uss_term_matches_the_equation():
    x, w, memory, filled, labels = uss_problem()
    gamma, m, b0 = 6.0, 0.1, 2.5
    head = lh2face_plugin.build_head("uss", num_classes=6, embedding_size=5, gamma=gamma, m=m, init_b=b0,
                                     lambda_uss=0.8, base_kwargs=dict(s=8.0, m=0.2))
    head.memory.copy_(memory)
    head.filled.copy_(filled)
    memory = head.memory.double()  # the float32 buffer
    cos = x @ w.t()
    out = head.evaluate(cos, labels, embeddings=x)
    assert set(out.terms) == {"uss"} and out.stats["b"].item() == b0
    assert out.terms["uss"].item() == pytest.approx(0.8 * naive_uss(x, memory, filled, labels, gamma, m, b0), rel=1e-12)
    # the base head's logits: CosFace s=8, m=0.2
    expected = 8.0 * cos
    expected[torch.arange(7), labels] -= 8.0 * 0.2
    assert torch.allclose(out.logits, expected, atol=1e-12)
    # after the step the memory holds the last feature of each class of the batch
    head.flush()
    for cls, row in ((0, 4), (1, 1), (2, 6), (3, 3), (5, 5)):
        assert torch.allclose(head.memory[cls].double(), x[row], atol=1e-7), cls
    assert bool(head.filled.all())  # 4 was filled before


def test_uss_initial_b_is_the_mean_negative_logsumexp():
    x, w, memory, filled, labels = uss_problem()
    gamma = 6.0
    head = lh2face_plugin.build_head("uss", num_classes=6, embedding_size=5, gamma=gamma,
                                     base_kwargs=dict(s=8.0, m=0.2))
    head.memory.copy_(memory)
    head.filled.copy_(filled)
    memory = head.memory.double()
    head.evaluate(x @ w.t(), labels, embeddings=x)
    lse = []
    for i in range(7):
        vals = [gamma * float(x[i] @ memory[j]) for j in range(6) if j != int(labels[i]) and filled[j]]
        lse.append(math.log(sum(math.exp(v) for v in vals)))
    assert head.b.item() == pytest.approx(statistics.fmean(lse), rel=1e-6)


# ----------------------------------------------------------------------------------- ElasticFace


def naive_elastic_rows(cos, labels, margins, s, kind):
    """s*cos(theta_y + m_i) (arc) or s*(cos theta_y - m_i) (cos) for the target, s*cos elsewhere."""
    rows = []
    for i in range(cos.shape[0]):
        y = int(labels[i])
        row = []
        for j in range(cos.shape[1]):
            c = cos[i, j]
            if j != y:
                row.append(s * c)
            elif kind == "arc":
                row.append(s * cos_of_angle_sum(c, margins[i]))
            else:
                row.append(s * (c - margins[i]))
        rows.append(row)
    return rows


def naive_plus_assignment(drawn, target_cos):
    """The largest drawn margin to the smallest target cosine, and so on down."""
    order = sorted(range(len(target_cos)), key=lambda i: (float(target_cos[i]), i))
    ranked = sorted((float(v) for v in drawn), reverse=True)
    out = [0.0] * len(drawn)
    for i, v in zip(order, ranked):
        out[i] = v
    return out


@pytest.mark.parametrize("kind", ["arc", "cos"])
@pytest.mark.parametrize("plus", [False, True])
def test_elasticface_logits_gradients_and_margins_match_the_equations(kind, plus):
    s, m, sigma = 10.0, 0.4, 0.1
    head = lh2face_plugin.build_head("elasticface", s=s, m=m, sigma=sigma, margin_type=kind, plus=plus, seed=3)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    for step in range(3):
        g = torch.Generator().manual_seed(20 + step)
        cos = torch.empty(8, 5, dtype=DT).uniform_(-0.9, 0.9, generator=g)
        drawn = head.draw(step, 8)
        assert drawn.std().item() > 0.02 and abs(drawn.mean().item() - m) < 0.15
        target = [cos[i, labels[i]] for i in range(8)]
        margins = naive_plus_assignment(drawn, target) if plus else [float(v) for v in drawn]
        c1, c2 = cos.clone().requires_grad_(), cos.clone().requires_grad_()
        out = head.evaluate(c1, labels)
        loss = F.cross_entropy(out.logits, labels)
        rows = naive_elastic_rows(c2, labels, margins, s, kind)
        ref_loss = cross_entropy(rows, labels)
        assert torch.allclose(out.logits, stack(rows), atol=1e-9, rtol=0)
        assert loss.item() == pytest.approx(ref_loss.item(), abs=1e-9)
        assert torch.allclose(grads(loss, c1)[0], grads(ref_loss, c2)[0], atol=1e-9, rtol=0)
        assert out.stats["margin"].item() == pytest.approx(statistics.fmean(margins), abs=1e-12)
    assert int(head.steps) == 3


def test_elasticface_margins_follow_the_normal_law_and_freeze_in_eval():
    head = lh2face_plugin.build_head("elasticface", m=0.5, sigma=0.05)
    drawn = torch.cat([head.draw(k, 512) for k in range(20)])
    assert drawn.mean().item() == pytest.approx(0.5, abs=0.002)
    assert drawn.std().item() == pytest.approx(0.05, rel=0.03)
    assert not torch.equal(head.draw(0, 8), head.draw(1, 8))
    cos = torch.rand(4, 3, dtype=DT)
    labels = torch.tensor([0, 1, 2, 0])
    head.eval()
    out = head.evaluate(cos, labels)
    assert int(head.steps) == 0 and out.stats["margin"].item() == 0.5
    want = 64.0 * torch.cos(torch.acos(cos[torch.arange(4), labels]) + 0.5)
    assert torch.allclose(out.logits[torch.arange(4), labels], want, atol=1e-12)


def test_elasticface_resume_draws_what_the_uninterrupted_run_draws():
    cos, labels = torch.rand(6, 4, dtype=DT), torch.tensor([0, 1, 2, 3, 0, 1])
    run = lh2face_plugin.build_head("elasticface", sigma=0.1)
    logits = [run(cos, labels) for _ in range(3)]
    resumed = lh2face_plugin.build_head("elasticface", sigma=0.1)
    first = lh2face_plugin.build_head("elasticface", sigma=0.1)
    first(cos, labels)
    resumed.load_state_dict(first.state_dict())
    assert torch.equal(resumed(cos, labels), logits[1]) and torch.equal(resumed(cos, labels), logits[2])
