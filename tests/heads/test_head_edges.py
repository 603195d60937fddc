"""Edges of the heads that the mutation run (``.ci/mutation.py heads``) found unchecked, each against the
equation written out in float64 (docs/METHODS.md and the heads' docstrings) or against the documented value:

- a head built without arguments has the defaults its page documents (docs/heads/NAME.md);
- LH2Face's ``kappa_scale`` reads norms far below 1 relative to their mean (``nu`` is clamped only at 1e-6);
- LH2Face's quality margin clips ``q`` at both bounds;
- a one-row batch divides the terms by 1; a term of weight 0 is not computed nor reported;
- L_pp over the shard (``pp_scope="shard"``) when the batch holds one class.
"""
from __future__ import annotations

import ast
import math
import os
import re
import statistics

import pytest
import torch
import torch.nn.functional as F
from _helpers_heads import builtin_heads, log_cn_mpmath

import lh2face_plugin

DT = torch.float64
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROW = re.compile(r"^\| `(\w+)` \| `([^`]*)` \|", re.M)


def documented_defaults(name):
    with open(os.path.join(ROOT, "docs", "heads", f"{name}.md"), encoding="utf-8") as fh:
        return {key: ast.literal_eval(value) for key, value in ROW.findall(fh.read())}


@pytest.mark.parametrize("name", builtin_heads())
def test_a_head_built_without_arguments_has_its_documented_defaults(name):
    """The hyperparameters the head records (``state_dict``) against its page's table. A default of ``None``
    that the head resolves (ElasticFace's ``m``, USS's ``base_kwargs``) and a recorded value that is not a
    parameter (ArcFace recorded as the combined margin's ``m1``, ``m2``, ``m3``) are not compared; that every
    parameter has its row is tests/test_docs.py's check."""
    documented = documented_defaults(name)
    hparams = lh2face_plugin.build_head(name).state_dict()["_extra_state"]["hparams"]
    compared = {k: v for k, v in hparams.items() if documented.get(k) is not None}
    assert compared, name
    for key, value in compared.items():
        assert value == documented[key], (name, key, value, documented[key])


def problem(n=7, c=6, seed=5, norms=None):
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(n, 4, generator=g, dtype=DT), dim=1)
    w = F.normalize(torch.randn(c, 4, generator=g, dtype=DT), dim=1)
    labels = torch.arange(n) % c
    return x @ w.t(), labels, torch.as_tensor(norms, dtype=DT), x, w


def lh2face_logits(cos, labels, kappa, target):
    """kappa_i cos_ij off the target, ``target(i, cos_iy)`` on it."""
    rows = []
    for i in range(cos.shape[0]):
        rows.append([target(i, float(cos[i, j])) if j == int(labels[i]) else kappa[i] * float(cos[i, j])
                     for j in range(cos.shape[1])])
    return torch.tensor(rows, dtype=DT)


@pytest.mark.parametrize("margin", ["mean", "per_sample"])
def test_lh2face_kappa_scale_reads_small_norms_relative_to_their_mean(margin):
    """kappa_i = s clamp(|z_i| / nu, rel_min, rel_max), nu the batch mean of the norms (first batch): norms of
    about 1e-3 give the kappa of norms of about 1 (only nu < 1e-6 is clamped)."""
    norms = [0.002, 0.004, 0.003, 0.0021, 0.005, 0.0015, 0.0033]
    cos, labels, z, x, w = problem(norms=norms)
    s, alpha = 8.0, 0.35
    head = lh2face_plugin.build_head("lh2face", kappa_scale=s, rel_min=0.6, rel_max=1.6, margin=margin, alpha=alpha,
                                     lambda_pps=0.0, lambda_pns=0.0, lambda_pp=0.0)
    out = head.evaluate(cos, labels, norms=z, embeddings=x, weights=w)
    nu = statistics.fmean(norms)
    kappa = [s * min(max(v / nu, 0.6), 1.6) for v in norms]
    mu = statistics.fmean(kappa)
    if margin == "mean":
        want = lh2face_logits(cos, labels, kappa, lambda i, c: kappa[i] * c - alpha * mu)
    else:
        want = lh2face_logits(cos, labels, kappa, lambda i, c: kappa[i] * (c - alpha * kappa[i] / mu))
    torch.testing.assert_close(out.logits.double(), want, rtol=1e-5, atol=1e-5)


def test_lh2face_quality_margin_clips_q_at_both_bounds():
    """m_i = alpha (1 + spread q_i), q_i = clip((|z_i| - nu) / (sigma / h + 1e-3), -1, 1); nu, sigma the batch's
    mean and unbiased standard deviation (first batch). With h = 3, rows fall outside [-1, 1] on both sides."""
    norms = [2.0, 30.0, 9.0, 10.0, 11.0, 1.0, 10.5]
    cos, labels, z, x, w = problem(norms=norms)
    alpha, spread, h = 0.3, 0.8, 3.0
    head = lh2face_plugin.build_head("lh2face", margin="quality", alpha=alpha, margin_spread=spread, norm_h=h,
                                     kappa_min=1.0, kappa_max=40.0, lambda_pps=0.0, lambda_pns=0.0, lambda_pp=0.0)
    out = head.evaluate(cos, labels, norms=z, embeddings=x, weights=w)
    nu, sigma = statistics.fmean(norms), statistics.stdev(norms)
    raw_q = [(v - nu) / (sigma / h + 1e-3) for v in norms]
    assert max(raw_q) > 1.5 and min(raw_q) < -1.5  # the problem reaches both bounds
    q = [min(1.0, max(-1.0, v)) for v in raw_q]
    kappa = [min(max(v, 1.0), 40.0) for v in norms]
    want = lh2face_logits(cos, labels, kappa, lambda i, c: kappa[i] * (c - alpha * (1 + spread * q[i])))
    torch.testing.assert_close(out.logits.double(), want, rtol=1e-6, atol=1e-5)


def test_lh2face_terms_of_a_one_row_batch_are_divided_by_one():
    """L_pps = mean_i -(log C_n(kappa_i) + kappa_i cos_iy), L_pns = mean_i sum_{j != y} relu(cos_ij - tau): over
    one row, the row's own values."""
    cos, labels, z, x, w = problem(n=1, norms=[7.0])
    head = lh2face_plugin.build_head("lh2face", kappa_min=2.0, kappa_max=12.0, vmf_dim=16, lambda_pps=0.3,
                                     lambda_pns=0.7, lambda_pp=0.0, tau_pns=-0.5)
    out = head.evaluate(cos, labels, norms=z, embeddings=x, weights=w)
    y = int(labels[0])
    pps = -(log_cn_mpmath(16, 7.0) + 7.0 * float(cos[0, y]))
    pns = sum(max(0.0, float(cos[0, j]) + 0.5) for j in range(cos.shape[1]) if j != y)
    assert out.terms["pps"].item() == pytest.approx(0.3 * pps, rel=1e-5)
    assert out.terms["pns"].item() == pytest.approx(0.7 * pns, rel=1e-9)


@pytest.mark.parametrize("off", ["pps", "pns", "pp"])
def test_lh2face_term_of_weight_zero_is_not_reported(off):
    cos, labels, z, x, w = problem(norms=[3.0, 8.0, 14.0, 30.0, 5.0, 9.0, 11.0])
    weights = {f"lambda_{t}": (0.0 if t == off else 0.5) for t in ("pps", "pns", "pp")}
    head = lh2face_plugin.build_head("lh2face", kappa_min=2.0, kappa_max=12.0, vmf_dim=16, **weights)
    out = head.evaluate(cos, labels, norms=z, embeddings=x, weights=w)
    assert set(out.terms) == {"pps", "pns", "pp"} - {off}


def test_lh2face_pp_over_the_shard_with_one_class_in_the_batch():
    """L_pp = mean_u (1/s) logsumexp_{j != u} s cos(w_u, w_j): one positive proxy u, j over the other C - 1."""
    cos, labels, z, x, w = problem(norms=[5.0] * 7)
    labels = torch.full_like(labels, 2)
    s_pp = 6.0
    head = lh2face_plugin.build_head("lh2face", pp_scope="shard", lambda_pp=0.5, s_pp=s_pp, lambda_pps=0.0,
                                     lambda_pns=0.0)
    out = head.evaluate(cos, labels, norms=z, embeddings=x, weights=w)
    pp = math.log(sum(math.exp(s_pp * float(w[2] @ w[j])) for j in range(w.shape[0]) if j != 2)) / s_pp
    assert out.terms["pp"].item() == pytest.approx(0.5 * pp, rel=1e-9)


HALF_PI = math.pi / 2
# (head, parameter, refused values, accepted bound values); other parameters at their defaults
BOUNDS = [
    ("lh2face", "kappa_min", [0.0, -1.0], [1e-3]),
    ("lh2face", "kappa_max", [15.9], [16.0]),                      # >= kappa_min (16)
    ("lh2face", "momentum", [0.0, 1.0001], [1e-6, 1.0]),           # (0, 1]
    ("lh2face", "vmf_dim", [1, 0], [2]),
    ("lh2face", "lambda_pps", [-1e-3], [0.0]),
    ("lh2face", "lambda_pns", [-1e-3], [0.0]),
    ("lh2face", "lambda_pp", [-1e-3], [0.0]),
    ("lh2face", "tau_pns", [-1.0001, 1.0001], [-1.0, 1.0]),
    ("lh2face", "s_pp", [0.0], [1e-3]),
    ("lh2face", "pp_scope", ["all"], ["shard", "batch"]),
    ("lh2face", "margin", ["quantile"], ["mean", "per_sample", "quality"]),
    ("lh2face", "kappa_scale", [0.0], [1e-3]),
    ("lh2face", "rel_min", [0.0], [1e-3]),
    ("lh2face", "rel_max", [0.49], [0.5]),                         # >= rel_min (0.5)
    ("lh2face", "clamp_grad", ["True", 1], [True]),
    ("lh2face", "margin_spread", [-1e-3], [0.0]),
    ("lh2face", "norm_h", [0.0], [1e-3]),
    ("lh2face", "alpha", [-1e-3], [0.0]),
    # the angular-margin heads (heads/margins.py); ArcFace's and CosFace's m are recorded as m2 and m3
    ("combined", "m1", [0.0], [1e-3]),
    ("combined", "m2", [-1e-3, HALF_PI + 1e-6], [0.0, HALF_PI]),
    ("combined", "m3", [-1e-3, 1.0001], [0.0, 1.0]),
    ("combined", "interclass_filtering_threshold", [-1e-3, 1.0001], [0.0, 1.0]),
    ("arcface", "m", [-1e-3, HALF_PI + 1e-6], [0.0, HALF_PI]),
    ("cosface", "m", [-1e-3, 1.0001], [0.0, 1.0]),
]


@pytest.mark.parametrize("name, key, refused, accepted", BOUNDS, ids=[f"{b[0]}-{b[1]}" for b in BOUNDS])
def test_each_parameter_out_of_its_range_is_refused_by_name(name, key, refused, accepted):
    """Refused just outside its range with an error that starts with its name; accepted at its bounds (and
    recorded as given, for the heads RECORDED below checks: they record every parameter under its name)."""
    for value in refused:
        with pytest.raises((ValueError, TypeError), match=rf"^{key} must be"):
            lh2face_plugin.build_head(name, **{key: value})
    for value in accepted:
        hparams = lh2face_plugin.build_head(name, **{key: value}).state_dict()["_extra_state"]["hparams"]
        if key in RECORDED.get(name, {}):
            assert hparams[key] == value


RECORDED = {
    "lh2face": dict(alpha=0.2, kappa_min=3.0, kappa_max=30.0, margin="quality", momentum=0.3, vmf_dim=24,
                    lambda_pps=0.2, lambda_pns=0.3, lambda_pp=0.4, tau_pns=0.25, s_pp=9.0, pp_scope="shard",
                    kappa_scale=12.0, rel_min=0.7, rel_max=1.7, clamp_grad=True, margin_spread=0.6, norm_h=0.5),
    "combined": dict(s=30.0, m1=1.1, m2=0.2, m3=0.15, interclass_filtering_threshold=0.4, straight_through=False),
}


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_a_head_records_every_parameter_it_was_built_with(name):
    head = lh2face_plugin.build_head(name, **RECORDED[name])
    assert head.state_dict()["_extra_state"]["hparams"] == RECORDED[name]


def test_lh2face_buffers_are_named_in_its_state():
    head = lh2face_plugin.build_head("lh2face", **RECORDED["lh2face"])
    assert {k for k in head.state_dict() if k != "_extra_state"} == {
        "norm_mean", "norm_std", "running_mean", "num_batches_tracked"}
    plain = lh2face_plugin.build_head("lh2face")
    assert {k for k in plain.state_dict() if k != "_extra_state"} == {"running_mean", "num_batches_tracked"}


@pytest.mark.parametrize("kw, needs", [(dict(pp_scope="batch"), False), (dict(pp_scope="shard", lambda_pp=0.0), False),
                                       (dict(pp_scope="shard", lambda_pp=0.1), True)])
def test_lh2face_asks_for_the_class_proxies_only_for_pp_over_the_shard(kw, needs):
    assert lh2face_plugin.build_head("lh2face", **kw).needs_weights is needs


def test_lh2face_running_statistics_move_at_its_momentum():
    """mu, nu and sigma: the first batch's values, then (1 - momentum) old + momentum new."""
    momentum, s = 0.5, 8.0
    head = lh2face_plugin.build_head("lh2face", momentum=momentum, kappa_scale=s, rel_min=0.5, rel_max=2.0,
                                     lambda_pps=0.0, lambda_pns=0.0, lambda_pp=0.0)
    batches = [[3.0, 8.0, 14.0, 5.0, 9.0, 11.0, 6.0], [4.0, 4.5, 20.0, 7.0, 7.5, 9.0, 12.0]]
    nu = sigma = mu = None
    for norms in batches:
        cos, labels, z, x, w = problem(norms=norms)
        out = head.evaluate(cos, labels, norms=z, embeddings=x, weights=w)
        b_nu, b_sigma = statistics.fmean(norms), statistics.stdev(norms)
        nu = b_nu if nu is None else (1 - momentum) * nu + momentum * b_nu
        sigma = b_sigma if sigma is None else (1 - momentum) * sigma + momentum * b_sigma
        b_mu = statistics.fmean(s * min(max(v / nu, 0.5), 2.0) for v in norms)
        mu = b_mu if mu is None else (1 - momentum) * mu + momentum * b_mu
        assert head.norm_mean.item() == pytest.approx(nu, rel=1e-6)
        assert head.norm_std.item() == pytest.approx(sigma, rel=1e-6)
        assert out.stats["mu"].item() == pytest.approx(mu, rel=1e-6)
