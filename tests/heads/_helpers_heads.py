"""Shared inputs for head tests: every registered head with small, test-friendly settings."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Tuple

import torch
import torch.nn.functional as F

import lh2face_plugin

@dataclass(frozen=True)
class Case:
    """Constructor arguments of one built-in head for every kind of head test.

    Attributes:
        unit: contract, float64 gradcheck, naive references, block and layer equality (dense =
            blockwise), sharding on 1-3 ranks, hardening. Small scales keep gradcheck well
            conditioned; proxy/USS terms are on so that every code path runs.
        learn: a real optimisation on a small separable problem (tests/heads/test_learning.py).
        host: the plugin's Partial FC on arcface_torch's PartialFC_V2 over 2 gloo ranks, float32
            (tests/arcface_torch/test_partial_fc_dist.py; ``D`` there is 16).
        finite: float hyperparameters that must refuse inf and NaN by name.
        reference: the naive float64 reference the unit row (and every variant of the head) is checked
            against: a key of ``REFERENCES`` in tests/heads/test_reference_table.py, written from
            METHODS.md's equations; a row or variant without one fails that file's tests.
    """

    unit: dict
    learn: dict
    host: dict
    finite: Tuple[str, ...] = ()
    reference: str = ""


class Variant(NamedTuple):
    """A formula variant of a registered head: its kwargs and the reference it is checked against."""

    head: str
    kwargs: dict
    reference: str


# The one table of head test cases: every head registered by this package must have a row (the
# cases come from available_heads(), and a head without one fails every test of it).
HEAD_CASES = {
    "arcface": Case(dict(s=8.0, m=0.5, straight_through=False), dict(s=16.0, m=0.3), dict(s=8.0, m=0.5), ("s",),
                    reference="margin-softmax"),
    "cosface": Case(dict(s=8.0, m=0.35), dict(s=16.0, m=0.2), dict(s=8.0, m=0.35), ("m",), reference="margin-softmax"),
    "combined": Case(dict(s=8.0, m1=1.0, m2=0.3, m3=0.1, straight_through=False, interclass_filtering_threshold=0.5),
                     dict(s=16.0, m2=0.2, m3=0.1),
                     dict(s=8.0, m1=1.0, m2=0.3, m3=0.1, interclass_filtering_threshold=0.5), ("m1",),
                     reference="margin-softmax"),
    "lh2face": Case(dict(kappa_min=2.0, kappa_max=12.0, lambda_pps=0.1, lambda_pns=0.5, lambda_pp=0.5, tau_pns=0.1,
                         s_pp=4.0, vmf_dim=16),
                    dict(kappa_min=4.0, kappa_max=16.0),
                    dict(kappa_min=2.0, kappa_max=12.0, vmf_dim=16, lambda_pps=0.1, lambda_pns=0.5, lambda_pp=0.5,
                         tau_pns=0.1, s_pp=4.0), ("alpha", "kappa_max", "s_pp"), reference="lh2face"),
    "mv-softmax": Case(dict(s=8.0, m=0.2, t=0.2), dict(s=16.0), dict(s=8.0, m=0.2, t=0.2), ("t",),
                       reference="mv-softmax"),
    "sv-softmax": Case(dict(s=8.0, m=0.2, t=1.3), dict(s=16.0), dict(s=8.0, m=0.2, t=1.3), ("t",),
                       reference="sv-softmax"),
    "uss": Case(dict(gamma=8.0, m=0.1, base_kwargs=dict(s=8.0, m=0.2)),
                dict(base_kwargs=dict(s=16.0, m=0.2), warmup_steps=20),
                dict(embedding_size=16, gamma=8.0, m=0.1, base_kwargs=dict(s=8.0, m=0.2)), ("gamma", "init_b"),
                reference="uss"),
    # h=0.5 spreads norm_hat over about [-0.6, 0.6] for make_inputs' norms
    "adaface": Case(dict(s=8.0, m=0.4, h=0.5), dict(s=16.0, m=0.3), dict(s=8.0, m=0.4, h=0.5), ("s", "h"),
                    reference="adaface"),
    # magnitudes of make_inputs (3..14) inside [l_a, u_a], so the margin moves with them
    "magface": Case(dict(s=8.0, l_a=2.0, u_a=20.0, l_m=0.2, u_m=0.5, lambda_g=1.0),
                    dict(s=16.0, l_a=2.0, u_a=30.0, l_m=0.2, u_m=0.4, lambda_g=5.0),
                    dict(s=8.0, l_a=2.0, u_a=20.0, l_m=0.2, u_m=0.5, lambda_g=1.0), ("lambda_g", "u_a"),
                    reference="magface"),
    # alpha=0.5: t moves in a few steps
    "curricularface": Case(dict(s=8.0, m=0.5, alpha=0.5), dict(s=16.0, m=0.3), dict(s=8.0, m=0.5, alpha=0.5),
                           ("s", "alpha"), reference="curricularface"),
    "elasticface": Case(dict(s=8.0, m=0.3, sigma=0.1, plus=True), dict(s=16.0, m=0.3),
                        dict(s=8.0, m=0.3, sigma=0.1, plus=True), ("s", "sigma"), reference="elasticface"),
}

TEST_KWARGS = {name: case.unit for name, case in HEAD_CASES.items()}


def case_of(name: str) -> Case:
    """The table row of a registered head; fails the calling test when the head has none."""
    if name not in HEAD_CASES:
        import pytest

        pytest.fail(missing_kwargs_message(name))
    return HEAD_CASES[name]


# Formula variants: every value of a choice or switch that changes a head's formula has a case here or in
# HEAD_CASES (tests/heads/test_reference_table.py enumerates the heads' parameters and fails on one without).
VARIANTS = {
    "lh2face-per-sample": Variant("lh2face", dict(TEST_KWARGS["lh2face"], margin="per_sample"), "lh2face"),
    "mv-arc-fixed": Variant("mv-softmax", dict(s=8.0, m=0.3, t=0.2, margin_type="arc", weight="fixed"),
                            "mv-softmax"),
    "mv-am-hard-target": Variant("mv-softmax", dict(s=8.0, m=0.3, t=0.2, easy_margin=False), "mv-softmax"),
    "sv-arc": Variant("sv-softmax", dict(s=8.0, t=1.2, margin_type="arc", m=0.3), "sv-softmax"),
    "sv-plain": Variant("sv-softmax", dict(s=8.0, t=1.2, margin_type="none"), "sv-softmax"),
    "magface-threshold": Variant("magface", dict(TEST_KWARGS["magface"], easy_margin=False), "magface"),
    "lh2face-pp-shard": Variant("lh2face", dict(TEST_KWARGS["lh2face"], pp_scope="shard"), "lh2face"),
    "lh2face-quality": Variant("lh2face", dict(TEST_KWARGS["lh2face"], margin="quality"), "lh2face"),
    "lh2face-scaled": Variant("lh2face", dict(TEST_KWARGS["lh2face"], kappa_scale=8.0, rel_min=0.6, rel_max=1.6),
                              "lh2face"),
    "lh2face-clamp-grad": Variant("lh2face", dict(TEST_KWARGS["lh2face"], kappa_min=5.0, clamp_grad=True,
                                                  margin="per_sample"), "lh2face"),
    "uss-batch": Variant("uss", dict(TEST_KWARGS["uss"], negatives="batch"), "uss"),
    "uss-arcface-fixed-b": Variant("uss", dict(gamma=8.0, m=0.1, init_b=3.0, warmup_steps=1, lambda_uss=0.5,
                                               base="arcface", base_kwargs=dict(s=8.0, m=0.3, straight_through=False)),
                                   "uss"),
    "arcface-straight-through": Variant("arcface", dict(s=8.0, m=0.5), "margin-softmax"),
    "combined-sphere": Variant("combined", dict(s=8.0, m1=1.4, m2=0.2, m3=0.05),
                               "margin-softmax"),
    "elasticface-cos": Variant("elasticface", dict(s=8.0, m=0.3, sigma=0.1, margin_type="cos"), "elasticface"),
}

# cases whose gradient is, by design, not the derivative of their value (arcface_torch's straight-through
# angular margin): the float64 gradcheck leaves them out; their reference checks the gradient they define
STRAIGHT_THROUGH = {"arcface-straight-through", "combined-sphere"}

# cases whose margin depends on the norms without a gradient (by design): gradcheck holds the norms fixed
NORMS_DETACHED = {"lh2face-per-sample", "lh2face-quality", "lh2face-clamp-grad", "adaface"}


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
    cases += [(k, v.head, v.kwargs) for k, v in VARIANTS.items()]
    return cases


def missing_kwargs_message(name):
    return (f"head {name!r} is registered but has no test parameters: add its row to HEAD_CASES in "
            "tests/heads/_helpers_heads.py")


def build(name, kwargs, num_classes, dim):
    if kwargs is None:
        import pytest

        pytest.fail(missing_kwargs_message(name))
    head = lh2face_plugin.build_head(name, **kwargs)
    head.setup_shard(num_classes, dim)
    return head


def make_inputs(n=6, c=5, d=4, seed=0, dtype=torch.float64, norm_range=(3.0, 14.0), off_shard=False):
    """Raw embeddings z [N, D], proxies w [C, D], labels [N] with every class reachable.

    The edge rows are always there: row 0 has label 0 (a label that must not read as "off-shard") and the
    last row the last class; with ``off_shard`` row 1 has label -1 (its class lives on another shard).
    """
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=dtype)
    z = F.normalize(z, dim=1) * torch.empty(n, 1, dtype=dtype).uniform_(*norm_range, generator=g)
    w = torch.randn(c, d, generator=g, dtype=dtype)
    labels = torch.randint(0, c, (n,), generator=g)
    labels[0], labels[-1] = 0, c - 1
    if off_shard:
        labels[1] = -1
    return z, w, labels


def head_loss(head, z, w, labels, class_index=None, ctx=None):
    """Cross-entropy of the head's logits (rows of label -1 left out) + its extra term, single process;
    returns (loss, logits)."""
    x = F.normalize(z, dim=1)
    wn = F.normalize(w, dim=1)
    cos = (x @ wn.t()).clamp(-1, 1)
    out = head.evaluate(cos, labels, norms=z.norm(dim=1), embeddings=x, weights=wn, class_index=class_index, ctx=ctx)
    loss = F.cross_entropy(out.logits, labels, ignore_index=-1)
    return (loss if out.extra is None else loss + out.extra), out.logits


def log_cn_mpmath(n, kappa):
    """log C_n(kappa) = (n/2 - 1) log kappa - (n/2) log 2 pi - log I_{n/2-1}(kappa), the vMF normaliser (mpmath)."""
    import pytest

    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 30
    v = mpmath.mpf(n) / 2 - 1
    return float(v * mpmath.log(kappa) - (mpmath.mpf(n) / 2) * mpmath.log(2 * mpmath.pi)
                 - mpmath.log(mpmath.besseli(v, kappa)))
