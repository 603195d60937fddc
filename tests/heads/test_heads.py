"""Contract, numerics and validation of every registered head."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from _helpers_heads import (NORMS_DETACHED, STRAIGHT_THROUGH, TEST_KWARGS, all_cases, build, builtin_heads, head_loss,
                            make_inputs)

import lh2face_plugin
from lh2face_plugin.heads.base import Head

CASES = all_cases()
IDS = [c[0] for c in CASES]


def test_every_builtin_head_is_registered():
    assert set(TEST_KWARGS) <= set(lh2face_plugin.available_heads())


def test_every_builtin_head_has_test_parameters():
    missing = sorted(set(builtin_heads()) - set(TEST_KWARGS))
    assert not missing, f"registered heads without a row in HEAD_CASES (tests/heads/_helpers_heads.py): {missing}"
    assert {"adaface", "magface", "curricularface"} <= set(builtin_heads())


def test_a_new_builtin_head_without_test_parameters_fails(monkeypatch):
    from _helpers_heads import build as build_case

    from lh2face_plugin.registry import HEADS

    class Probe(Head):
        def plan(self, inp):  # pragma: no cover - never built
            raise AssertionError

    Probe.__module__ = "lh2face_plugin.heads.probe"
    HEADS.names()
    monkeypatch.setattr(HEADS, "_entries", {**HEADS._entries, "probe": Probe})
    cases = {c[0]: c for c in all_cases()}
    assert cases["probe"] == ("probe", "probe", None)
    with pytest.raises(pytest.fail.Exception, match="'probe' is registered but has no test parameters"):
        build_case("probe", None, 5, 4)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradcheck_float64(case):
    _, name, kw = case
    if case[0] in STRAIGHT_THROUGH:
        pytest.skip("straight-through by design: tests/heads/test_reference_table.py checks the gradient it defines")
    z, w, labels = make_inputs(off_shard=True)
    head = build(name, kw, w.shape[0], w.shape[1])
    with torch.no_grad():  # one training call: fills USS's memory, sets LH2Face's running mean
        head_loss(head, z, w, labels)
    head.eval()  # then freeze state so the numerical Jacobian sees the same function

    if case[0] in NORMS_DETACHED:
        # LH2Face's per-sample margin alpha*kappa_i/mu and AdaFace's norm_hat are detached by design, so
        # the numerical Jacobian w.r.t. the norms would see them: hold the norms fixed and check
        # directions and proxies
        norms = z.norm(dim=1, keepdim=True)

        def fn(v_, w_):
            return head_loss(head, F.normalize(v_, dim=1) * norms, w_, labels)[0]
    else:
        def fn(v_, w_):
            return head_loss(head, v_, w_, labels)[0]

    assert torch.autograd.gradcheck(fn, (z.clone().requires_grad_(), w.clone().requires_grad_()), atol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_returns_fresh_tensor_and_leaves_input(case):
    _, name, kw = case
    z, w, labels = make_inputs(dtype=torch.float32)
    head = build(name, kw, w.shape[0], w.shape[1])
    x, wn = F.normalize(z), F.normalize(w)
    cos = x @ wn.t()
    before = cos.clone()
    logits = head.evaluate(cos, labels, norms=z.norm(dim=1), embeddings=x, weights=wn).logits
    assert logits.dtype == torch.float32 and logits.shape == cos.shape
    assert logits.data_ptr() != cos.data_ptr()
    assert torch.equal(cos, before)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_compute_in_float32(case, dtype):
    _, name, kw = case
    z, w, labels = make_inputs(n=16, c=7, d=8, dtype=torch.float32)
    head = build(name, kw, w.shape[0], w.shape[1])
    x, wn = F.normalize(z), F.normalize(w)
    cos = (x @ wn.t()).to(dtype).requires_grad_()
    out = head.evaluate(cos, labels, norms=z.norm(dim=1).to(dtype), embeddings=x.to(dtype), weights=wn.to(dtype))
    logits = out.logits
    assert logits.dtype == torch.float32
    loss = F.cross_entropy(logits, labels) + (out.extra if out.extra is not None else 0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(cos.grad.float()).all()


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("norm", [1e-3, 1.0, 1e4])
def test_stable_at_cosine_extremes_and_norm_range(case, norm):
    _, name, kw = case
    n, c, d = 6, 5, 4
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    w = torch.eye(c, d) if c <= d else torch.randn(c, d)
    w = F.normalize(torch.randn(c, d), dim=1)
    # rows exactly on their own proxy (cos = +1), exactly opposite it (cos = -1), and mixed
    z = torch.cat([w[labels[:3]], -w[labels[3:5]], w[:1]]) * norm
    head = build(name, dict(kw, **({"kappa_min": 1e-3, "kappa_max": 1e4} if name == "lh2face" else {})), c, d)
    zr = z.clone().requires_grad_()
    wr = w.clone().requires_grad_()
    for _ in range(2):  # second call: USS memory and running means are filled
        loss, logits = head_loss(head, zr, wr, labels)
        loss.backward()
        assert torch.isfinite(logits).all() and torch.isfinite(loss)
        assert torch.isfinite(zr.grad).all() and torch.isfinite(wr.grad).all()
        zr.grad = wr.grad = None


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_label_out_of_range_names_row_and_value(case):
    _, name, kw = case
    z, w, labels = make_inputs(dtype=torch.float32)
    head = build(name, kw, w.shape[0], w.shape[1])
    labels[3] = w.shape[0] + 2
    x, wn = F.normalize(z), F.normalize(w)
    with pytest.raises(ValueError, match=rf"row 3: {w.shape[0] + 2}"):
        head.evaluate(x @ wn.t(), labels, norms=z.norm(dim=1), embeddings=x, weights=wn)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_nan_features_raise_unless_disabled(case):
    _, name, kw = case
    z, w, labels = make_inputs(dtype=torch.float32)
    z[2, 1] = float("nan")
    x, wn = F.normalize(z), F.normalize(w)
    head = build(name, kw, w.shape[0], w.shape[1])
    with pytest.raises(FloatingPointError, match="row 2"):
        head.evaluate(x @ wn.t(), labels, norms=z.norm(dim=1), embeddings=x, weights=wn)
    quiet = build(name, dict(kw, check_inputs=False), w.shape[0], w.shape[1])
    quiet.evaluate(x @ wn.t(), labels, norms=z.norm(dim=1), embeddings=x, weights=wn)  # no check, no error


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("sv-softmax", dict(t=0.9), "t must be >= 1"),
        ("mv-softmax", dict(t=-0.1), "t must be >= 0"),
        ("mv-softmax", dict(m=-0.2), "m must be >= 0"),
        ("arcface", dict(m=-0.5), "^m must be >= 0"),
        ("cosface", dict(m=1.5), "^m must be <= 1"),
        ("adaface", dict(h=0), "h must be > 0"),
        ("magface", dict(l_a=20.0, u_a=10.0), "u_a must be > 20"),
        ("curricularface", dict(alpha=1.5), "alpha must be <= 1"),
        ("cosface", dict(s=0), "s must be > 0"),
        ("lh2face", dict(kappa_min=10, kappa_max=5), "kappa_max must be >= 10"),
        ("lh2face", dict(margin="median"), "margin must be"),
        ("lh2face", dict(alpha=-1), "alpha must be >= 0"),
        ("uss", dict(gamma=0), "gamma must be > 0"),
        ("uss", dict(base="uss"), "sample-to-class"),
        ("mv-softmax", dict(weight="heavy"), "weight must be"),
    ],
)
def test_bad_hyperparameters_fail_at_construction(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        lh2face_plugin.build_head(name, **kwargs)


def test_integral_floats_and_numpy_scalars_are_accepted():
    np = pytest.importorskip("numpy")
    head = lh2face_plugin.build_head("lh2face", vmf_dim=256.0, alpha=np.float32(0.25))
    assert head.vmf_dim == 256 and isinstance(head.vmf_dim, int) and head.alpha == 0.25


def test_unknown_name_lists_known_heads():
    with pytest.raises(KeyError) as err:
        lh2face_plugin.build_head("lh2fcae")
    msg = str(err.value)
    assert "lh2face" in msg and "mv-softmax" in msg and "Did you mean" in msg


def test_unknown_keyword_lists_parameters():
    with pytest.raises(TypeError, match="alpha=0.35"):
        lh2face_plugin.build_head("lh2face", alhpa=0.3)


def test_arcface_straight_through_gradient_is_s():
    z, w, labels = make_inputs(n=8, c=6, d=5, dtype=torch.float32)
    cos = (F.normalize(z) @ F.normalize(w).t()).requires_grad_()
    head = lh2face_plugin.build_head("arcface", s=64.0, m=0.5)
    logits = head(cos, labels)
    logits.backward(torch.ones_like(logits))
    assert torch.allclose(cos.grad, torch.full_like(cos, 64.0))
    rows = torch.arange(8)
    expected = 64 * torch.cos(torch.acos(cos.detach()[rows, labels]) + 0.5)
    assert torch.allclose(logits.detach()[rows, labels], expected, atol=1e-4)


def test_arcface_true_gradient_matches_analytic():
    c = torch.tensor([[0.3, -0.2]], dtype=torch.float64, requires_grad=True)
    head = lh2face_plugin.build_head("arcface", s=2.0, m=0.4, straight_through=False)
    head(c, torch.tensor([0])).sum().backward()
    theta = math.acos(0.3)
    assert c.grad[0, 0].item() == pytest.approx(2.0 * math.sin(theta + 0.4) / math.sin(theta), rel=1e-9)
    assert c.grad[0, 1].item() == pytest.approx(2.0)


def test_mv_softmax_reweights_only_misclassified_negatives():
    cos = torch.tensor([[0.5, 0.3, 0.1, -0.4]])
    head = lh2face_plugin.build_head("mv-softmax", s=10.0, m=0.35, t=0.2)
    logits = head(cos, torch.tensor([0]))
    # boundary f = 0.5 - 0.35 = 0.15: column 1 is hard, 2 and 3 are not
    expected = torch.tensor([[10 * 0.15, 10 * (1.2 * 0.3 + 0.2), 10 * 0.1, 10 * -0.4]])
    assert torch.allclose(logits, expected, atol=1e-5)
    fixed = lh2face_plugin.build_head("mv-softmax", s=10.0, m=0.35, t=0.2, weight="fixed")(cos, torch.tensor([0]))
    assert fixed[0, 1].item() == pytest.approx(10 * (0.3 + 0.2), abs=1e-5)


def test_sv_softmax_t1_is_the_base_loss():
    z, w, labels = make_inputs(n=10, c=6, d=5, dtype=torch.float32)
    cos = F.normalize(z) @ F.normalize(w).t()
    sv = lh2face_plugin.build_head("sv-softmax", s=30.0, t=1.0, margin_type="am", m=0.3)(cos, labels)
    cf = lh2face_plugin.build_head("cosface", s=30.0, m=0.3)(cos, labels)
    assert torch.allclose(sv, cf, atol=1e-5)
    sv2 = lh2face_plugin.build_head("sv-softmax", s=30.0, t=1.5, margin_type="am", m=0.3)(cos, labels)
    hard = cos > (cos.gather(1, labels[:, None]) - 0.3)
    hard[torch.arange(10), labels] = False
    assert torch.allclose(sv2[hard], 30 * (1.5 * cos[hard] + 0.5), atol=1e-4)


def test_lh2face_logits_use_bounded_norm_and_uamf_margin():
    z, w, labels = make_inputs(n=8, c=6, d=5, dtype=torch.float32, norm_range=(5.0, 90.0))
    head = lh2face_plugin.build_head("lh2face", kappa_min=10.0, kappa_max=60.0, alpha=0.35)
    x, wn = F.normalize(z), F.normalize(w)
    cos = x @ wn.t()
    out = head.evaluate(cos, labels, norms=z.norm(dim=1), weights=wn)
    logits = out.logits
    kappa = z.norm(dim=1).clamp(10, 60)
    mu = kappa.mean()
    assert head.running_mean.item() == pytest.approx(mu.item(), rel=1e-6)
    expected = kappa[:, None] * cos
    rows = torch.arange(8)
    expected[rows, labels] -= 0.35 * mu
    assert torch.allclose(logits, expected, atol=1e-4)
    assert set(out.terms) == {"pps", "pns", "pp"} and set(out.stats) == {"mu"}


def test_state_dict_resumes_running_mean_memory_and_threshold():
    z, w, labels = make_inputs(n=12, c=5, d=4, dtype=torch.float32)
    for name, kw in (("lh2face", {}), ("uss", dict(base_kwargs=dict(s=8.0)))):
        a = build(name, kw, 5, 4)
        for _ in range(3):
            head_loss(a, z + 0.1 * torch.randn_like(z), w, labels)
        state = copy.deepcopy(a.state_dict())
        b = build(name, kw, 5, 4)
        b.load_state_dict(state)
        la, lb = head_loss(a, z, w, labels)[0], head_loss(b, z, w, labels)[0]
        assert torch.equal(la, lb), name
        if name == "uss":
            assert bool(state["filled"].any()) and state["b_initialized"].item()
            assert state["b"].item() != 0.0
        else:
            assert state["num_batches_tracked"].item() == 3


def test_third_party_head_through_entry_point(tmp_path, monkeypatch):
    pkg = tmp_path / "myheads.py"
    pkg.write_text(
        "from lh2face_plugin.heads.base import Head, HeadPlan, LogitSpec\n"
        "class Double(Head):\n"
        "    \"\"\"k times the cosine.\"\"\"\n"
        "    def __init__(self, k: float = 2.0, check_inputs=True):\n"
        "        super().__init__(check_inputs); self.k = k\n"
        "    def plan(self, inp):\n"
        "        return HeadPlan(LogitSpec(lambda c: c * self.k, scale=self.k))\n"
    )
    dist = tmp_path / "myheads-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myheads\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[lh2face_plugin.heads]\ndouble = myheads:Double\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from lh2face_plugin.registry import HEADS

    HEADS.names()
    monkeypatch.setattr(HEADS, "_loaded", False)  # rescan entry points, as a new process would
    monkeypatch.setattr(HEADS, "_entries", dict(HEADS._entries))
    assert "double" in lh2face_plugin.available_heads() and "arcface" in lh2face_plugin.available_heads()
    head = lh2face_plugin.build_head("double", k=3.0)
    assert isinstance(head, Head)
    assert torch.equal(head(torch.ones(2, 3), torch.tensor([0, 1])), torch.full((2, 3), 3.0))
