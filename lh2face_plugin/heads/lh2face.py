"""LH2Face: Loss function for Hard High-quality Face (arXiv 2506.23555, 2025).

Published facts (the paper's abstract and summaries; its full text is not
public): the similarity is the log-density of a von Mises-Fisher
distribution, ``S_ij = log C_n(kappa_i) + kappa_i cos_ij``, with the feature
norm as concentration, ``kappa_i = |z_i|``; the Uncertainty-Aware Margin
Function uses ``m = 0.35 * mean|z|``; ``L_FR = L_vMF + L_pps + L_pns + L_pp``.

Our reconstruction (every choice is a parameter):

- ``log C_n(kappa_i)`` is the same for every class of row i and cancels in
  the softmax, so the logits are ``kappa_i cos_ij`` (target:
  ``kappa_i cos_iy - m``). ``kappa = clamp(|z|, kappa_min, kappa_max)``:
  unbounded norms diverge (METHODS.md, stability notes).
- ``margin="mean"``: ``m = alpha * mu`` in logit units, ``mu`` the running
  mean of the *bounded* kappa (a buffer, updated in training mode, global
  over ranks, saved in ``state_dict``). ``margin="per_sample"``:
  ``m_i = alpha * kappa_i / mu`` in cosine units, target ``kappa_i (cos_iy - m_i)``.
  Margins carry no gradient.
- ``L_pps = mean_i -(log C_n(kappa_i) + kappa_i cos_iy)``: the vMF negative
  log-likelihood of a sample under its own proxy; its kappa-gradient
  ``A_n(kappa) - cos_iy`` calibrates the norm as a certainty.
- ``L_pns = mean_i sum_{j != y_i} relu(cos_ij - tau_pns)``: a hinge pushing
  samples from negative proxies closer than ``tau_pns``.
- ``L_pp = mean_u (1/s_pp) logsumexp_{j != u} s_pp cos(w_u, w_j)`` over the
  positive proxies u of the batch against this call's proxies (all shards):
  a soft maximum of each positive proxy's cosine to the others. Never the
  full C x C matrix.

The extra term returned is ``lambda_pps L_pps + lambda_pns L_pns + lambda_pp L_pp``;
``last_terms`` holds each component of the last call for logging.
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F

from ..distributed import all_gather_rows, global_logsumexp, global_mean_stat, global_sum
from ..registry import register_head
from .base import Head, HeadInputs, check_positive, check_range
from .fused import margin_logits, masked_rowsum
from .vmf import log_cn

__all__ = ["LH2Face"]


@register_head("lh2face")
class LH2Face(Head):
    """LH2Face logits (vMF similarity + UAMF) and proxy losses.

    Args:
        alpha: UAMF margin factor (paper: 0.35).
        kappa_min, kappa_max: bounds of kappa = |z| (ours: [16, 64]).
        margin: ``"mean"`` (m = alpha * mu, paper) or ``"per_sample"`` (ours).
        momentum: running-mean update rate of mu (first batch initialises it).
        vmf_dim: n of the vMF density in L_pps (may differ from the embedding size).
        lambda_pps, lambda_pns, lambda_pp: weights of the proxy losses (0 = off).
        tau_pns: hinge threshold of L_pns.
        s_pp: softmax scale of L_pp.
        check_inputs: validate labels and features on every call.

    Shape:
        cosine [N, C], labels [N], norms [N] (required), weights [C, D] (when
        ``lambda_pp > 0``) -> ``(logits [N, C] float32, extra_loss [])``.
    """

    needs_norms = True

    def __init__(self, alpha: float = 0.35, kappa_min: float = 16.0, kappa_max: float = 64.0,
                 margin: str = "mean", momentum: float = 0.01, vmf_dim: int = 512,
                 lambda_pps: float = 0.1, lambda_pns: float = 0.1, lambda_pp: float = 0.1,
                 tau_pns: float = 0.4, s_pp: float = 16.0, check_inputs: bool = True):
        super().__init__(check_inputs)
        self.alpha = check_range("alpha", alpha, 0.0)
        self.kappa_min = check_positive("kappa_min", kappa_min)
        self.kappa_max = check_range("kappa_max", kappa_max, self.kappa_min)
        if margin not in ("mean", "per_sample"):
            raise ValueError(f"margin must be 'mean' or 'per_sample', got {margin!r}")
        self.margin = margin
        self.momentum = check_range("momentum", momentum, 0.0, 1.0, low_open=True)
        if int(vmf_dim) != vmf_dim or vmf_dim < 2:
            raise ValueError(f"vmf_dim must be an integer >= 2, got {vmf_dim!r}")
        self.vmf_dim = int(vmf_dim)
        self.lambda_pps = check_range("lambda_pps", lambda_pps, 0.0)
        self.lambda_pns = check_range("lambda_pns", lambda_pns, 0.0)
        self.lambda_pp = check_range("lambda_pp", lambda_pp, 0.0)
        self.tau_pns = check_range("tau_pns", tau_pns, -1.0, 1.0)
        self.s_pp = check_positive("s_pp", s_pp)
        self.needs_weights = self.lambda_pp > 0
        self.register_buffer("running_mean", torch.tensor(0.0))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.last_terms: Dict[str, torch.Tensor] = {}
        self._record(alpha=self.alpha, kappa_min=self.kappa_min, kappa_max=self.kappa_max, margin=margin,
                     momentum=self.momentum, vmf_dim=self.vmf_dim, lambda_pps=self.lambda_pps,
                     lambda_pns=self.lambda_pns, lambda_pp=self.lambda_pp, tau_pns=self.tau_pns, s_pp=self.s_pp)

    @torch.no_grad()
    def _update_mean(self, kappa: torch.Tensor, ctx) -> torch.Tensor:
        batch_mean = global_mean_stat(kappa.sum(), torch.tensor(kappa.numel(), device=kappa.device), ctx)
        if self.training:
            if int(self.num_batches_tracked) == 0:
                self.running_mean.copy_(batch_mean)
            else:
                self.running_mean.lerp_(batch_mean.to(self.running_mean.dtype), self.momentum)
            self.num_batches_tracked += 1
        elif int(self.num_batches_tracked) == 0:
            return batch_mean
        return self.running_mean.clone()

    def compute(self, inp: HeadInputs):
        ctx = inp.ctx
        kappa = inp.norms.clamp(self.kappa_min, self.kappa_max)
        mu = self._update_mean(kappa.detach(), ctx).to(kappa.dtype)
        kt = kappa[inp.pos]
        if self.margin == "mean":
            m = self.alpha * mu

            def psi(c, k):
                return k * c - m

            args = (kt,)
        else:
            m_i = (self.alpha * kt / mu).detach()

            def psi(c, k, mi):
                return k * (c - mi)

            args = (kt, m_i)
        logits = margin_logits(inp.cosine, inp.pos, inp.target, psi, args, scale=kappa)

        n = inp.num_rows
        zero = inp.cosine.new_zeros(())
        terms = {"pps": zero, "pns": zero, "pp": zero}
        if self.lambda_pps > 0:
            ct = inp.cosine[inp.pos, inp.target]
            nll = -(log_cn(kt, self.vmf_dim) + kt * ct)
            terms["pps"] = global_sum(nll.sum(), ctx) / n
        if self.lambda_pns > 0:
            tau = self.tau_pns
            rows = masked_rowsum(inp.cosine, lambda x: F.relu(x - tau), (), inp.pos, inp.target)
            terms["pns"] = global_sum(rows.sum(), ctx) / n
        if self.lambda_pp > 0:
            terms["pp"] = self._proxy_proxy(inp)
        extra = self.lambda_pps * terms["pps"] + self.lambda_pns * terms["pns"] + self.lambda_pp * terms["pp"]
        self.last_terms = {k: v.detach() for k, v in terms.items()}
        self.last_terms["mu"] = mu.detach()
        return logits, extra

    def _proxy_proxy(self, inp: HeadInputs) -> torch.Tensor:
        ctx, w = inp.ctx, inp.weights
        local_cls = torch.unique(inp.target)
        own = all_gather_rows(w[local_cls], ctx)
        sizes = all_gather_rows(torch.tensor([local_cls.numel()], device=w.device), ctx)
        start = int(sizes[: ctx.rank].sum()) if ctx.sharded else 0
        sim = (own @ w.t()) * self.s_pp
        keep = torch.ones_like(sim, dtype=torch.bool)
        if local_cls.numel():
            keep[torch.arange(start, start + local_cls.numel(), device=w.device), local_cls] = False
        lse = global_logsumexp(sim, ctx, keep)
        if own.shape[0] == 0:
            return sim.sum() * 0.0
        return lse.mean() / self.s_pp
