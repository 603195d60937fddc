"""The head's loss components: Partial FC's ``last_terms`` and their lines in arcface_torch's log."""
import logging

import pytest
import torch

import lh2face_plugin
from lh2face_plugin.arcface_torch.term_logging import TermLogging, format_terms


class _HostLogging:
    """What TermLogging reads of arcface_torch's CallBackLogging: rank, frequent, init, writer."""

    def __init__(self, frequent, writer, rank=0):
        self.rank, self.frequent, self.writer, self.init, self.calls = rank, frequent, writer, False, []

    def __call__(self, global_step, loss, epoch, fp16, lr, scaler):
        self.calls.append(global_step)
        if self.rank == 0 and global_step > 0 and global_step % self.frequent == 0:
            self.init = True


class _Writer:
    def __init__(self):
        self.scalars = []

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, round(value, 6), step))


class _PFC:
    last_terms = {}


def test_components_are_averaged_between_the_host_s_log_lines(caplog):
    writer, pfc = _Writer(), _PFC()
    inner = _HostLogging(frequent=2, writer=writer)
    logger = TermLogging(inner, lambda: pfc)
    lines = []
    with caplog.at_level(logging.INFO):
        for step, (ce, pps) in enumerate([(4.0, -1.0), (2.0, -3.0), (1.0, -5.0), (3.0, -1.0)], start=1):
            pfc.last_terms = {"loss": torch.tensor(ce + pps), "ce": torch.tensor(ce), "pps": torch.tensor(pps)}
            logger(step, None, 0, False, 0.1, None)
            lines += [r.getMessage() for r in caplog.records if r.getMessage().startswith("lh2face terms")]
            caplog.clear()
    assert inner.calls == [1, 2, 3, 4] and logger.frequent == 2, "the host's callback runs as before"
    # step 2 is the host's first log step (it only starts its clock): our first line comes with its second
    assert lines == [format_terms({"loss": 0.0, "ce": 2.5, "pps": -2.5}, 4)]
    assert lines[0] == "lh2face terms (mean of 4 steps): loss 0.0000  ce 2.5000  pps -2.5000"
    assert writer.scalars == [("lh2face/loss", 0.0, 4), ("lh2face/ce", 2.5, 4), ("lh2face/pps", -2.5, 4)]


def test_other_ranks_log_nothing(caplog):
    pfc = _PFC()
    pfc.last_terms = {"ce": torch.tensor(1.0)}
    logger = TermLogging(_HostLogging(frequent=1, writer=None, rank=1), lambda: pfc)
    with caplog.at_level(logging.INFO):
        for step in (1, 2, 3):
            logger(step, None, 0, False, 0.1, None)
    assert not [r for r in caplog.records if "lh2face terms" in r.getMessage()]


@pytest.mark.parametrize("name, kwargs, extra", [
    ("lh2face", dict(kappa_min=2.0, kappa_max=12.0, vmf_dim=16, lambda_pps=0.1, lambda_pns=0.5, lambda_pp=0.3),
     ("pps", "pns", "pp")),
    ("uss", dict(gamma=8.0, lambda_uss=0.7, base_kwargs=dict(s=8.0, m=0.2)), ("uss",)),
])
def test_partial_fc_last_terms_add_up_to_the_loss(real_pfc_class, name, kwargs, extra):
    def run(**change):
        pfc = real_pfc_class(lh2face_plugin.build_head(name, **dict(kwargs, **change)), 16, 6, 1.0, False)
        with torch.no_grad():
            pfc.weight.normal_(0, 1, generator=torch.Generator().manual_seed(3))
        torch.manual_seed(0)
        for _ in range(2):                   # USS fills its memory on the first step
            loss = pfc(torch.randn(8, 16) * 3, torch.arange(8) % 6)
        return loss, pfc.last_terms

    loss, terms = run()
    assert set(terms) == {"loss", "ce", *extra, "mu" if name == "lh2face" else "b"}
    assert all(t.dim() == 0 and not t.requires_grad for t in terms.values())
    assert float(terms["loss"]) == pytest.approx(float(loss.detach()))
    assert float(terms["loss"]) == pytest.approx(float(terms["ce"]) + sum(float(terms[k]) for k in extra), abs=1e-5)
    assert tuple(terms)[:2] == ("loss", "ce")
    for k in extra:                          # weighted by the head's own lambda: doubling it doubles the term
        doubled = run(**{f"lambda_{k}": 2 * kwargs[f"lambda_{k}"]})[1]
        assert float(doubled[k]) == pytest.approx(2 * float(terms[k]), rel=1e-5)
        assert all(float(doubled[j]) == pytest.approx(float(terms[j]), rel=1e-5) for j in extra if j != k)
