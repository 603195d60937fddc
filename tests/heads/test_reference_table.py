"""Every case of the head table (HEAD_CASES' unit rows and VARIANTS) against the naive reference it names.

The references are written from docs/METHODS.md's equations (and, for the choices that are ours, from the
heads' docstrings), element by element in float64 python loops; they never call the package's helpers.
Each case runs two training calls on a problem with a row of label 0, a row of label -1 (its class lives on
another shard) and a row of the last class; the reference keeps its own running statistics and memory, and
the logits, every named term, the loss and the gradients (cosines and norms) must agree.

Structure: a head row or variant names its reference (``Case.reference``, ``Variant.reference``); a name
missing from ``REFERENCES`` fails. The references read the head's hyperparameters through a mapping that
records what they read: a constructor parameter no reference reads fails
``test_every_parameter_is_read_by_a_reference`` unless ``NOT_IN_A_FORMULA`` says why; every value of a
choice (``check_choice``'s list) or switch (a bool, or a parameter whose ``None`` turns a term on or off)
must appear in some case.
"""
from __future__ import annotations

import inspect
import math
import statistics

import mpmath
import pytest
import torch
import torch.nn.functional as F
from _helpers_heads import HEAD_CASES, VARIANTS, all_cases, build, builtin_heads, make_inputs

from lh2face_plugin.registry import HEADS

DT = torch.float64
C, D = 5, 4

# constructor parameters that change no formula, with the reason
NOT_IN_A_FORMULA = {
    "check_inputs": "input validation only",
    "seed": "ElasticFace's random stream: the reference reads the head's own draws (head.draw)",
    "num_classes": "USS memory rows (setup_shard allocates them)",
    "embedding_size": "USS memory width (setup_shard allocates it)",
}

# parameters whose None (the default) and a value are two forms of the formula
OPTIONAL_SWITCHES = {"lh2face": ("kappa_scale",), "uss": ("init_b",)}


class Params(dict):
    """A head's hyperparameters (constructor defaults + the case's kwargs) that records what is read."""

    def __init__(self, values, read):
        super().__init__(values)
        self.read = read

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


def full_kwargs(name, kwargs):
    sig = inspect.signature(HEADS.get(name).__init__)
    out = {k: p.default for k, p in sig.parameters.items() if k != "self" and p.default is not inspect.Parameter.empty}
    out.update(kwargs or {})
    return out


def problem(seed):
    """z [7, D] with norms over [1, 16] (both of LH2Face's test bounds), labels with 0, -1 and C - 1."""
    z, w, labels = make_inputs(n=7, c=C, d=D, seed=seed, norm_range=(1.0, 16.0), off_shard=True)
    assert labels[0] == 0 and labels[1] == -1 and labels[-1] == C - 1
    return z, w, labels


def stack(rows):
    return torch.stack([torch.stack([torch.as_tensor(v, dtype=DT) for v in r]) for r in rows])


def cross_entropy(rows, labels):
    """sum over the rows with a class on this shard of -log softmax(row)[y], / N (all rows)."""
    total = torch.zeros((), dtype=DT)
    for row, y in zip(rows, labels.tolist()):
        if y >= 0:
            total = total + torch.log(sum(torch.exp(v) for v in row)) - row[y]
    return total / len(rows)


def head_cross_entropy(logits, labels):
    return F.cross_entropy(logits, labels, ignore_index=-1, reduction="sum") / logits.shape[0]


def cos_plus(c, m):
    """cos(theta + m) = cos theta cos m - sin theta sin m."""
    m = torch.as_tensor(m, dtype=DT)
    return c * torch.cos(m) - torch.sqrt(1.0 - c * c) * torch.sin(m)


def val(t):
    """A 0-d tensor's float value, without its graph."""
    return float(torch.as_tensor(t).detach())


def f32(value):
    """The value as the heads' float32 buffers store it."""
    return float(torch.tensor(float(value), dtype=torch.float32))


def ema(state, key, value, momentum):
    """The first batch's value, then (1 - momentum) * old + momentum * new (kept in a float32 buffer)."""
    state[key] = f32(value if key not in state else (1 - momentum) * state[key] + momentum * f32(value))
    return state[key]


def softplus_clamped(v, gamma):
    return F.softplus(torch.clamp(v, -gamma, gamma))


# ----------------------------------------------------------------------------------- the references
# Each takes (p: Params, state: dict kept across calls, step, call: dict of cos, labels, norms, x, w, head)
# and returns (rows: list of lists of 0-d tensors, terms: dict name -> 0-d tensor).


def ref_margin_softmax(p, state, step, call, name):
    """s * (cos(m1 theta + m2) - m3) for the target, s cos elsewhere (ArcFace eq. 4); negatives above the
    inter-class filtering threshold are 0; straight-through: the target's value with the gradient of s cos."""
    cos, labels = call["cos"], call["labels"]
    s = p["s"]
    if name == "arcface":
        m1, m2, m3, through = 1.0, p["m"], 0.0, p["straight_through"]
    elif name == "cosface":
        m1, m2, m3, through = 1.0, 0.0, p["m"], False
    else:
        m1, m2, m3, through = p["m1"], p["m2"], p["m3"], p["straight_through"]
    thr = p["interclass_filtering_threshold"]
    rows = []
    for i in range(cos.shape[0]):
        row = []
        for j in range(cos.shape[1]):
            c = cos[i, j]
            if j == int(labels[i]):
                value = s * (torch.cos(m1 * torch.acos(c) + m2) - m3)
                if through and (m1 != 1.0 or m2 != 0.0):
                    value = s * (c - m3) + (value - s * (c - m3)).detach()
                row.append(value)
            elif thr > 0 and val(c) > thr:
                row.append(c * 0.0)
            else:
                row.append(s * c)
        rows.append(row)
    return rows, {}


def hard_negative_rows(cos, labels, s, f, target, hard):
    """Target ``target(c)``; a negative above ``f(target cosine)`` (the target cosine of a row whose class
    is on no shard reads 0, the all-reduce of nothing) is ``hard(c)``, the others s cos."""
    rows = []
    for i in range(cos.shape[0]):
        y = int(labels[i])
        ct = val(cos[i, y]) if y >= 0 else 0.0
        boundary = float(f(torch.tensor(ct, dtype=DT)))
        row = []
        for j in range(cos.shape[1]):
            c = cos[i, j]
            if j == y:
                row.append(target(c))
            elif val(c) > boundary:
                row.append(hard(c))
            else:
                row.append(s * c)
        rows.append(row)
    return rows


def margin_f(kind, m):
    """MV/SV-Softmax's f(m, theta): cos (none), cos - m (AM), cos(theta + m) (Arc)."""
    return {"none": lambda c: c, "am": lambda c: c - m, "arc": lambda c: cos_plus(c, m)}[kind]


def ref_mv_softmax(p, state, step, call):
    """MV-Softmax: hard negatives s (cos + t) (fixed) or s ((t + 1) cos + t) (adaptive); easy margin: the
    margin applies where cos_y > m (AM: the target stays positive) or cos_y > 0 (Arc), as in the reference
    code."""
    s, m, t, kind = p["s"], p["m"], p["t"], p["margin_type"]
    f = margin_f(kind, m)
    easy = p["easy_margin"]

    def target(c):
        keep = not easy or (val(c) > m if kind == "am" else val(c) > 0)
        return s * (f(c) if keep else c)

    fixed = p["weight"] == "fixed"
    hard = (lambda c: s * (c + t)) if fixed else (lambda c: s * ((t + 1) * c + t))
    return hard_negative_rows(call["cos"], call["labels"], s, f, target, hard), {}


def ref_sv_softmax(p, state, step, call):
    """SV-Softmax: support vectors (cos_k > f(m, theta_y)) become s (t cos + t - 1); m defaults to 0, 0.35, 0.5."""
    s, t, kind = p["s"], p["t"], p["margin_type"]
    m = p["m"] if p["m"] is not None else {"none": 0.0, "am": 0.35, "arc": 0.5}[kind]
    f = margin_f(kind, m)
    return hard_negative_rows(call["cos"], call["labels"], s, f, lambda c: s * f(c), lambda c: s * (t * c + t - 1)), {}


class LogCn(torch.autograd.Function):
    """log C_n(kappa) from mpmath's Bessel function; d/dkappa = -A_n(kappa) = -I_{n/2} / I_{n/2-1}."""

    @staticmethod
    def forward(ctx, kappa, n):
        mpmath.mp.dps = 30
        k, v = mpmath.mpf(float(kappa)), mpmath.mpf(n) / 2 - 1
        ctx.a_n = float(mpmath.besseli(v + 1, k) / mpmath.besseli(v, k))
        return kappa.new_tensor(float(v * mpmath.log(k) - (mpmath.mpf(n) / 2) * mpmath.log(2 * mpmath.pi)
                                      - mpmath.log(mpmath.besseli(v, k))))

    @staticmethod
    def backward(ctx, grad):
        return -ctx.a_n * grad, None


def bounded(v, low, high, through_low):
    """clamp(v, low, high); ``through_low``: below ``low`` the value is ``low`` but the gradient is v's."""
    if val(v) > high:
        return v * 0.0 + high
    if val(v) < low:
        return v - val(v) + low if through_low else v * 0.0 + low
    return v


def ref_lh2face(p, state, step, call):
    """LH2Face (METHODS.md section 1, our reconstruction; the head's docstring for per_sample/quality):
    kappa_i = clamp(|z_i|) (or kappa_scale * clamp(|z_i| / nu)); logits kappa_i cos_ij; target
    kappa_i cos_iy - alpha mu (mean), kappa_i (cos_iy - alpha kappa_i / mu) (per_sample),
    kappa_i (cos_iy - alpha (1 + spread q_i)), q_i = clip((|z_i| - nu) / (sigma / h + 1e-3), -1, 1) (quality);
    mu the running mean of kappa, nu and sigma of the raw norms; L_pps, L_pns, L_pp as in METHODS.md."""
    cos, labels, norms, w = call["cos"], call["labels"], call["norms"], call["w"]
    n, c = cos.shape
    mom = p["momentum"]
    raw = [val(v) for v in norms.detach()]
    margin, scale = p["margin"], p["kappa_scale"]
    if scale is not None or margin == "quality":
        nu = max(ema(state, "nu", statistics.fmean(raw), mom), 1e-6)
        sigma = ema(state, "sigma", statistics.stdev(raw), mom)
    kappa = []
    for i in range(n):
        if scale is None:
            kappa.append(bounded(norms[i], p["kappa_min"], p["kappa_max"], p["clamp_grad"]))
        else:
            kappa.append(scale * bounded(norms[i] / nu, p["rel_min"], p["rel_max"], p["clamp_grad"]))
    mu = ema(state, "mu", statistics.fmean(val(k) for k in kappa), mom)
    alpha = p["alpha"]
    rows = []
    for i in range(n):
        y, k = int(labels[i]), kappa[i]
        row = []
        for j in range(c):
            if j != y:
                row.append(k * cos[i, j])
            elif margin == "mean":
                row.append(k * cos[i, j] - alpha * mu)
            elif margin == "per_sample":
                row.append(k * (cos[i, j] - alpha * val(k) / mu))
            else:
                q = min(1.0, max(-1.0, (raw[i] - nu) / (sigma / p["norm_h"] + 1e-3)))
                row.append(k * (cos[i, j] - alpha * (1.0 + p["margin_spread"] * q)))
        rows.append(row)
    terms = {}
    pos = [i for i in range(n) if int(labels[i]) >= 0]
    if p["lambda_pps"] > 0:
        nll = sum(-(LogCn.apply(kappa[i], p["vmf_dim"]) + kappa[i] * cos[i, int(labels[i])]) for i in pos)
        terms["pps"] = p["lambda_pps"] * nll / n
    if p["lambda_pns"] > 0:
        hinge = sum(torch.relu(cos[i, j] - p["tau_pns"]) for i in range(n) for j in range(c) if j != int(labels[i]))
        terms["pns"] = p["lambda_pns"] * hinge / n
    if p["lambda_pp"] > 0:
        s_pp = p["s_pp"]
        positives = sorted({int(labels[i]) for i in pos})
        others = positives if p["pp_scope"] == "batch" else list(range(c))
        soft = [torch.log(sum(torch.exp(s_pp * (w[u] @ w[j])) for j in others if j != u)) / s_pp
                for u in positives if any(j != u for j in others)]
        terms["pp"] = p["lambda_pp"] * (sum(soft) / len(soft) if soft else torch.zeros((), dtype=DT))
    return rows, terms


def ref_uss(p, state, step, call):
    """USS (METHODS.md section 4) added to its base head: positives softplus(-gamma (g_pos - m) + b) with the
    stored row of the sample's class, negatives softplus(gamma g_neg - b) with every other filled row
    (``negatives="memory"``) or the rows of the batch's own classes (``"batch"``), arguments clamped to
    [-gamma, gamma], summed and divided by N; b starts at the batch mean of logsumexp(gamma g_neg) (rows with
    a negative) unless ``init_b`` fixes it; the memory keeps each class's last feature (float32 buffer)."""
    base = p["base"]
    base_p = Params(full_kwargs(base, p["base_kwargs"]), set())
    rows, terms = REFERENCES[HEAD_CASES[base].reference](base_p, state.setdefault("base", {}), step, call,
                                                         **({"name": base} if base in MARGIN_HEADS else {}))
    x, labels = call["x"], call["labels"]
    n = x.shape[0]
    gamma, m = p["gamma"], p["m"]
    memory = state.setdefault("memory", {})
    state.setdefault("steps", 0)
    if p["init_b"] is not None and "b" not in state:
        state["b"] = p["init_b"]
    pos = [i for i in range(n) if int(labels[i]) >= 0]
    if p["negatives"] == "batch":
        cols = sorted({int(labels[i]) for i in pos})
        rows_with = pos
    else:
        cols = list(range(C))
        rows_with = list(range(n))
    negatives = {i: [j for j in cols if j != int(labels[i]) and j in memory] for i in rows_with}
    if state["steps"] >= p["warmup_steps"] and p["lambda_uss"] > 0:
        if "b" not in state:
            lse = [math.log(sum(math.exp(gamma * float(x[i] @ memory[j])) for j in negatives[i]))
                   for i in rows_with if negatives[i]]
            if lse:
                state["b"] = statistics.fmean(lse)
        b = state.get("b", 0.0)
        total = torch.zeros((), dtype=DT)
        for i in pos:
            y = int(labels[i])
            if y in memory:
                total = total + softplus_clamped(-gamma * (x[i] @ memory[y] - m) + b, gamma)
        for i in rows_with:
            for j in negatives[i]:
                total = total + softplus_clamped(gamma * (x[i] @ memory[j]) - b, gamma)
        terms = dict(terms, uss=p["lambda_uss"] * total / n)
    state["steps"] += 1
    for i in pos:  # the last row of each class wins
        memory[int(labels[i])] = x[i].detach().float().double()
    return rows, terms


def ref_adaface(p, state, step, call):
    """AdaFace (METHODS.md section 7): norm_hat = clip(h (a - mu) / (sigma + 1e-3), -1, 1), a = clip(|z|, 1e-3,
    100), mu/sigma EMAs of the batch's mean and standard deviation of a; target
    s (cos(clamp(theta - m norm_hat, 1e-3, pi - 1e-3)) - m norm_hat - m)."""
    cos, labels, norms = call["cos"], call["labels"], call["norms"]
    s, m, h = p["s"], p["m"], p["h"]
    a = [min(max(val(v), 1e-3), 100.0) for v in norms.detach()]
    mu = ema(state, "mu", statistics.fmean(a), p["momentum"])
    sigma = ema(state, "sigma", statistics.stdev(a), p["momentum"])
    rows = []
    for i in range(cos.shape[0]):
        nh = max(-1.0, min(1.0, h * (a[i] - mu) / (sigma + 1e-3)))
        row = []
        for j in range(cos.shape[1]):
            c = cos[i, j]
            if j == int(labels[i]):
                angle = torch.clamp(torch.acos(c) - m * nh, 1e-3, math.pi - 1e-3)
                row.append(s * (torch.cos(angle) - (m * nh + m)))
            else:
                row.append(s * c)
        rows.append(row)
    return rows, {}


def ref_magface(p, state, step, call):
    """MagFace (METHODS.md section 7): a = clamp(|z|, l_a, u_a), m(a) linear from l_m to u_m, target
    s cos(theta + m(a)) (easy margin: where cos > 0, else cos; otherwise ArcFace's threshold cos > cos(pi - m)
    with the fallback cos - m sin m); term g = lambda_g / N sum_i (1/a_i + a_i / u_a^2) over this shard's rows
    (a row whose class is on another shard adds its share there)."""
    cos, labels, norms = call["cos"], call["labels"], call["norms"]
    s, l_a, u_a, l_m, u_m = p["s"], p["l_a"], p["u_a"], p["l_m"], p["u_m"]
    rows, g = [], torch.zeros((), dtype=DT)
    for i in range(cos.shape[0]):
        a = bounded(norms[i], l_a, u_a, False)
        mg = l_m + (u_m - l_m) * (a - l_a) / (u_a - l_a)
        if int(labels[i]) >= 0:
            g = g + 1.0 / a + a / u_a ** 2
        row = []
        for j in range(cos.shape[1]):
            c = cos[i, j]
            if j != int(labels[i]):
                row.append(s * c)
            elif p["easy_margin"]:
                row.append(s * (cos_plus(c, mg) if val(c) > 0 else c))
            elif val(c) > math.cos(math.pi - val(mg)):
                row.append(s * cos_plus(c, mg))
            else:
                row.append(s * (c - mg * torch.sin(mg)))
        rows.append(row)
    terms = {"g": p["lambda_g"] * g / cos.shape[0]} if p["lambda_g"] > 0 else {}
    return rows, terms


def ref_curricularface(p, state, step, call):
    """CurricularFace (METHODS.md section 7): target cos(theta + m) (fallback cos - m sin m past pi - m); a
    negative above cos(theta_y + m) becomes cos (t + cos); t = alpha t + (1 - alpha) mean target cosine,
    from 0; scaled by s. A row whose class is on no shard has no hard negatives."""
    cos, labels = call["cos"], call["labels"]
    s, m, alpha = p["s"], p["m"], p["alpha"]
    pos = [i for i in range(cos.shape[0]) if int(labels[i]) >= 0]
    mean_target = statistics.fmean(val(cos[i, labels[i]]) for i in pos)
    state["t"] = f32(alpha * state.get("t", 0.0) + (1 - alpha) * mean_target)
    t = state["t"]
    rows = []
    for i in range(cos.shape[0]):
        y = int(labels[i])
        boundary = float(cos_plus(cos[i, y].detach(), m)) if y >= 0 else math.inf
        row = []
        for j in range(cos.shape[1]):
            c = cos[i, j]
            if j == y:
                value = cos_plus(c, m) if val(c) > math.cos(math.pi - m) else c - m * math.sin(m)
            elif val(c) > boundary:
                value = c * (t + c)
            else:
                value = c
            row.append(s * value)
        rows.append(row)
    return rows, {}


def ref_elasticface(p, state, step, call):
    """ElasticFace (METHODS.md section 8): margins m_i ~ N(m, sigma^2) (the head's draw of this step);
    "+": the largest margins to the smallest (detached) target cosines; target s cos(theta + m_i) (arc) or
    s (cos - m_i) (cos)."""
    cos, labels, head = call["cos"], call["labels"], call["head"]
    n = cos.shape[0]
    kind = p["margin_type"]
    m = p["m"] if p["m"] is not None else {"arc": 0.5, "cos": 0.35}[kind]
    sigma = p["sigma"] if p["sigma"] is not None else {("arc", False): 0.05, ("cos", False): 0.05,
                                                       ("arc", True): 0.0175, ("cos", True): 0.025}[kind, p["plus"]]
    drawn = [val(v) for v in head.draw(step, n)]
    assert statistics.fmean(drawn) == pytest.approx(m, abs=4 * sigma)  # the draw has the configured law
    margins = drawn
    if p["plus"]:
        target = [val(cos[i, labels[i]]) if int(labels[i]) >= 0 else 0.0 for i in range(n)]
        order = sorted(range(n), key=lambda i: (target[i], i))
        margins = [0.0] * n
        for i, v in zip(order, sorted(drawn, reverse=True)):
            margins[i] = v
    s = p["s"]
    rows = []
    for i in range(n):
        row = []
        for j in range(cos.shape[1]):
            c = cos[i, j]
            if j != int(labels[i]):
                row.append(s * c)
            else:
                row.append(s * (cos_plus(c, margins[i]) if kind == "arc" else c - margins[i]))
        rows.append(row)
    return rows, {}


MARGIN_HEADS = {"arcface", "cosface", "combined"}
REFERENCES = {
    "margin-softmax": ref_margin_softmax,
    "mv-softmax": ref_mv_softmax,
    "sv-softmax": ref_sv_softmax,
    "lh2face": ref_lh2face,
    "uss": ref_uss,
    "adaface": ref_adaface,
    "magface": ref_magface,
    "curricularface": ref_curricularface,
    "elasticface": ref_elasticface,
}

# ----------------------------------------------------------------------------------- the tests

CASES = all_cases()


def reference_name(case_id, name):
    if case_id in VARIANTS:
        return VARIANTS[case_id].reference
    return HEAD_CASES[name].reference if name in HEAD_CASES else ""


def run_case(case_id, name, kwargs, read, check=True):
    """Two training calls of the head and of its reference; with ``check``, assert that they agree."""
    ref = REFERENCES.get(reference_name(case_id, name))
    if ref is None:
        pytest.fail(f"case {case_id!r} of head {name!r} names no reference in REFERENCES "
                    f"({reference_name(case_id, name)!r}): write one from METHODS.md")
    p = Params(full_kwargs(name, kwargs), read)
    head = build(name, kwargs, C, D)
    head.train()
    state = {}
    for step in range(2):
        z, w, labels = problem(10 + step)
        x, wn = F.normalize(z, dim=1), F.normalize(w, dim=1)
        cos = (x @ wn.t()).clamp(-1, 1)
        c1, n1 = cos.clone().requires_grad_(), z.norm(dim=1).requires_grad_()
        out = head.evaluate(c1, labels, norms=n1, embeddings=x, weights=wn)
        c2, n2 = cos.clone().requires_grad_(), z.norm(dim=1).requires_grad_()
        call = dict(cos=c2, labels=labels, norms=n2, x=x, w=wn, head=head)
        extra = {"name": name} if name in MARGIN_HEADS else {}
        rows, terms = ref(p, state, step, call, **extra)
        if not check:
            continue
        where = f"{case_id}, call {step}"
        # 1e-6: the running statistics live in float32 buffers (rounded alike in the references)
        diff = (out.logits - stack(rows)).abs()
        assert torch.allclose(out.logits, stack(rows), atol=1e-6, rtol=0), (where, (diff > 1e-6).nonzero().tolist())
        assert set(out.terms) == set(terms), where
        for key, value in terms.items():
            tol = 1e-5 if key == "pps" else 1e-7  # the head's log C_n is an asymptotic expansion
            assert out.terms[key].item() == pytest.approx(value.item(), rel=tol, abs=tol), (where, key)
        loss = head_cross_entropy(out.logits, labels) + sum(out.terms.values())
        ref_loss = cross_entropy(rows, labels) + sum(terms.values())
        assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-5, abs=1e-9), where
        g_head = torch.autograd.grad(loss, (c1, n1), allow_unused=True)
        g_ref = torch.autograd.grad(ref_loss, (c2, n2), allow_unused=True)
        for what, a, b in zip(("cosine", "norm"), g_head, g_ref):
            a = torch.zeros_like(c1 if what == "cosine" else n1) if a is None else a
            b = torch.zeros_like(a) if b is None else b
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-5), (where, what, a, b)
        if step == 0 and hasattr(head, "flush"):
            head.flush()


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_case_matches_its_reference(case):
    case_id, name, kwargs = case
    run_case(case_id, name, kwargs, set())


def test_every_parameter_is_read_by_a_reference():
    read = {}
    for case_id, name, kwargs in CASES:
        run_case(case_id, name, kwargs, read.setdefault(name, set()), check=False)
    for name in builtin_heads():
        params = set(full_kwargs(name, {})) | set(inspect.signature(HEADS.get(name).__init__).parameters) - {"self"}
        unread = sorted(params - read.get(name, set()) - set(NOT_IN_A_FORMULA))
        assert not unread, (f"{name}: parameters {unread} are read by no reference: use them in its reference in "
                            "tests/heads/test_reference_table.py, or say in NOT_IN_A_FORMULA why no formula uses them")


def switch_values(name, param, default):
    """The values of a formula switch: both bools, a check_choice list, None and a value, or None."""
    if isinstance(default, bool):
        return {True, False}
    if param in OPTIONAL_SWITCHES.get(name, ()):
        return {"None", "a value"}
    if isinstance(default, str):
        kwargs = dict(HEAD_CASES[name].unit, **{param: "\x00no such choice"})
        try:
            HEADS.build(name, **kwargs)
        except (ValueError, KeyError) as err:
            message = str(err)
        else:
            message = ""
        if f"{param} must be one of " in message:  # check_choice's message lists the choices
            return set(message.split(" must be one of ")[1].split(", got")[0].replace("'", "").split(", "))
    return None


def test_every_value_of_every_switch_has_a_case():
    seen = {}
    for _, name, kwargs in CASES:
        for key, value in full_kwargs(name, kwargs).items():
            if key in OPTIONAL_SWITCHES.get(name, ()):
                value = "None" if value is None else "a value"
            seen.setdefault((name, key), set()).add(value if isinstance(value, (bool, str)) else repr(value))
    missing = []
    for name in builtin_heads():
        for key, default in full_kwargs(name, {}).items():
            values = None if key in NOT_IN_A_FORMULA else switch_values(name, key, default)
            if values is not None:
                missing += [f"{name}: {key}={v!r}" for v in sorted(map(str, values - seen.get((name, key), set())))]
    assert not missing, f"formula switches with no case in HEAD_CASES/VARIANTS: {missing}"
    assert ("lh2face", "margin") in seen and seen["lh2face", "margin"] >= {"mean", "per_sample", "quality"}


def test_a_variant_without_a_reference_fails(monkeypatch):
    from _helpers_heads import Variant

    monkeypatch.setitem(VARIANTS, "lh2face-new", Variant("lh2face", dict(margin="quality"), "lh2face-new-margin"))
    with pytest.raises(pytest.fail.Exception, match="'lh2face-new' of head 'lh2face' names no reference"):
        run_case("lh2face-new", "lh2face", dict(margin="quality"), set())
