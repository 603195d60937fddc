"""Shared inputs for head tests: every registered head with small, test-friendly settings."""
from __future__ import annotations

import torch
import torch.nn.functional as F

import lh2face_plugin

# Parameters per built-in head for tests: small scales keep float64 gradcheck well conditioned, and
# proxy/USS terms are switched on so that every code path is exercised. Every head registered by this
# package must have an entry: the cases come from available_heads(), and a head without one fails.
TEST_KWARGS = {
    "arcface": dict(s=8.0, m=0.5, straight_through=False),
    "cosface": dict(s=8.0, m=0.35),
    "combined": dict(s=8.0, m1=1.0, m2=0.3, m3=0.1, straight_through=False, interclass_filtering_threshold=0.5),
    "lh2face": dict(kappa_min=2.0, kappa_max=12.0, lambda_pps=0.1, lambda_pns=0.5, lambda_pp=0.5,
                    tau_pns=0.1, s_pp=4.0, vmf_dim=16),
    "mv-softmax": dict(s=8.0, m=0.2, t=0.2),
    "sv-softmax": dict(s=8.0, m=0.2, t=1.3),
    "uss": dict(gamma=8.0, m=0.1, base_kwargs=dict(s=8.0, m=0.2)),
    # h=0.5 spreads norm_hat over about [-0.6, 0.6] for make_inputs' norms
    "adaface": dict(s=8.0, m=0.4, h=0.5),
    # magnitudes of make_inputs (3..14) inside [l_a, u_a], so the margin moves with them
    "magface": dict(s=8.0, l_a=2.0, u_a=20.0, l_m=0.2, u_m=0.5, lambda_g=1.0),
    # alpha=0.5: t moves in a few steps
    "curricularface": dict(s=8.0, m=0.5, alpha=0.5),
}

VARIANTS = {
    "lh2face-per-sample": ("lh2face", dict(TEST_KWARGS["lh2face"], margin="per_sample")),
    "mv-arc-fixed": ("mv-softmax", dict(s=8.0, m=0.3, t=0.2, margin_type="arc", weight="fixed")),
    "sv-arc": ("sv-softmax", dict(s=8.0, t=1.2, margin_type="arc", m=0.3)),
    "sv-plain": ("sv-softmax", dict(s=8.0, t=1.2, margin_type="none")),
    "magface-threshold": ("magface", dict(TEST_KWARGS["magface"], easy_margin=False)),
    "lh2face-pp-shard": ("lh2face", dict(TEST_KWARGS["lh2face"], pp_scope="shard")),
    "lh2face-quality": ("lh2face", dict(TEST_KWARGS["lh2face"], margin="quality")),
    "lh2face-scaled": ("lh2face", dict(TEST_KWARGS["lh2face"], kappa_scale=8.0, rel_min=0.6, rel_max=1.6)),
    "uss-batch": ("uss", dict(TEST_KWARGS["uss"], negatives="batch")),
}

# cases whose margin depends on the norms without a gradient (by design): gradcheck holds the norms fixed
NORMS_DETACHED = {"lh2face-per-sample", "lh2face-quality", "adaface"}


def builtin_heads():
    """Names of the heads this package registers (third-party entry points left out)."""
    from lh2face_plugin.registry import HEADS

    def builtin(factory):
        module = getattr(factory, "__module__", "")
        # a broken third-party entry point is a stand-in factory defined in lh2face_plugin.registry
        return module.startswith("lh2face_plugin.") and module != "lh2face_plugin.registry"

    return [n for n in lh2face_plugin.available_heads() if builtin(HEADS.get(n))]


def all_cases():
    """(case id, head name, kwargs) for every built-in head and the main variants.

    A built-in head missing from TEST_KWARGS comes with kwargs ``None``: :func:`build` fails on it,
    so every test of the head fails instead of leaving it out.
    """
    cases = [(n, n, TEST_KWARGS.get(n)) for n in builtin_heads()]
    cases += [(k, n, kw) for k, (n, kw) in VARIANTS.items()]
    return cases


def missing_kwargs_message(name):
    return (f"head {name!r} is registered but has no test parameters: add it to TEST_KWARGS in "
            "tests/heads/_helpers_heads.py (and LEARN_KWARGS in tests/heads/test_learning.py)")


def build(name, kwargs, num_classes, dim):
    if kwargs is None:
        import pytest

        pytest.fail(missing_kwargs_message(name))
    head = lh2face_plugin.build_head(name, **kwargs)
    head.setup_shard(num_classes, dim)
    return head


def make_inputs(n=6, c=5, d=4, seed=0, dtype=torch.float64, norm_range=(3.0, 14.0)):
    """Raw embeddings z [N, D], proxies w [C, D], labels [N] with every class reachable."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=dtype)
    z = F.normalize(z, dim=1) * torch.empty(n, 1, dtype=dtype).uniform_(*norm_range, generator=g)
    w = torch.randn(c, d, generator=g, dtype=dtype)
    labels = torch.randint(0, c, (n,), generator=g)
    return z, w, labels


def head_loss(head, z, w, labels, class_index=None, ctx=None):
    """Cross-entropy of the head's logits + its extra term, single process; returns (loss, logits)."""
    x = F.normalize(z, dim=1)
    wn = F.normalize(w, dim=1)
    cos = (x @ wn.t()).clamp(-1, 1)
    out = head.evaluate(cos, labels, norms=z.norm(dim=1), embeddings=x, weights=wn, class_index=class_index, ctx=ctx)
    loss = F.cross_entropy(out.logits, labels)
    return (loss if out.extra is None else loss + out.extra), out.logits
