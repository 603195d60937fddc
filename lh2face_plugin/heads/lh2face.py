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
  ``margin="quality"``: ``m_i = alpha (1 + margin_spread * q_i)`` in cosine units, with
  ``q_i = clip((|z_i| - nu) / (sigma / h), -1, 1)`` the batch-normalised norm (``nu``,
  ``sigma``: running mean and standard deviation of the raw norms, as AdaFace
  normalises them), so the margin grows with the sample's certainty without
  depending on the norms' absolute size. Margins carry no gradient.
- ``kappa_scale=s`` separates the logit scale from the raw norm:
  ``kappa_i = s * clamp(|z_i| / nu, rel_min, rel_max)``; the mean scale is then
  about ``s`` (matched to a baseline's), and only the certainty-dependent part
  differs from a fixed-scale loss. ``clamp_grad=True`` passes the norm's gradient
  through the lower bound (straight-through), so a norm below it can rise again.
- ``L_pps = mean_i -(log C_n(kappa_i) + kappa_i cos_iy)``: the vMF negative
  log-likelihood of a sample under its own proxy; its kappa-gradient
  ``A_n(kappa) - cos_iy`` calibrates the norm as a certainty.
- ``L_pns = mean_i sum_{j != y_i} relu(cos_ij - tau_pns)``: a hinge pushing
  samples from negative proxies closer than ``tau_pns``.
- ``L_pp = mean_u (1/s_pp) logsumexp_{j != u} s_pp cos(w_u, w_j)`` over the
  positive proxies u of the batch: a soft maximum of each positive proxy's
  cosine to the others. ``pp_scope="shard"`` takes j over this call's proxies
  on every shard (column blocks, never the C x C matrix: as costly as a second
  FC matmul); ``pp_scope="batch"`` takes j over the batch's positive proxies
  only (a U x U product, U <= N: the cost of a margin).

The terms come by name, weighted: ``pps``, ``pns``, ``pp``; ``mu`` is reported
as a statistic.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..distributed import all_gather_rows, global_sum
from ..layers.contract import HeadInputs, HeadPlan, LogitSpec, RowTerm
from ..layers.products import matmul_logsumexp
from ..registry import register_head
from .base import Head
from .hparams import check_bool, check_choice, check_int, check_positive, check_range
from .running import RunningStat
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
        kappa_scale: ``None`` (kappa = bounded norm) or the mean scale s (see above).
        rel_min, rel_max: bounds of |z|/nu when ``kappa_scale`` is set.
        clamp_grad: straight-through gradient at kappa's lower bound.
        margin_spread, norm_h: the quality margin's spread and AdaFace's h.
        pp_scope: ``"batch"`` (default) or ``"shard"``: the proxies L_pp compares with (see above).
        check_inputs: validate labels and features on every call.

    Shape:
        cosine [N, C], labels [N], norms [N] (required), weights [C, D] (when
        ``lambda_pp > 0``) -> :class:`~.base.HeadResult`: logits [N, C] float32,
        terms ``pps``, ``pns``, ``pp``, stat ``mu``.
    """

    needs_norms = True
    state_hparams = ("kappa_min", "kappa_max", "margin", "kappa_scale", "rel_min", "rel_max")

    def __init__(self, alpha: float = 0.35, kappa_min: float = 16.0, kappa_max: float = 64.0,
                 margin: str = "mean", momentum: float = 0.01, vmf_dim: int = 512,
                 lambda_pps: float = 0.1, lambda_pns: float = 0.1, lambda_pp: float = 0.1,
                 tau_pns: float = 0.4, s_pp: float = 16.0, pp_scope: str = "batch",
                 kappa_scale: Optional[float] = None, rel_min: float = 0.5, rel_max: float = 2.0,
                 clamp_grad: bool = False, margin_spread: float = 0.5, norm_h: float = 0.333,
                 check_inputs: bool = True):
        super().__init__(check_inputs)
        self.alpha = check_range("alpha", alpha, 0.0)
        self.kappa_min = check_positive("kappa_min", kappa_min)
        self.kappa_max = check_range("kappa_max", kappa_max, self.kappa_min)
        self.margin = check_choice("margin", margin, ("mean", "per_sample", "quality"))
        self.momentum = check_range("momentum", momentum, 0.0, 1.0, low_open=True)
        self.vmf_dim = check_int("vmf_dim", vmf_dim, 2)
        self.lambda_pps = check_range("lambda_pps", lambda_pps, 0.0)
        self.lambda_pns = check_range("lambda_pns", lambda_pns, 0.0)
        self.lambda_pp = check_range("lambda_pp", lambda_pp, 0.0)
        self.tau_pns = check_range("tau_pns", tau_pns, -1.0, 1.0)
        self.s_pp = check_positive("s_pp", s_pp)
        self.pp_scope = check_choice("pp_scope", pp_scope, ("shard", "batch"))
        self.kappa_scale = None if kappa_scale is None else check_positive("kappa_scale", kappa_scale)
        self.rel_min = check_positive("rel_min", rel_min)
        self.rel_max = check_range("rel_max", rel_max, self.rel_min)
        self.clamp_grad = check_bool("clamp_grad", clamp_grad)
        self.margin_spread = check_range("margin_spread", margin_spread, 0.0)
        self.norm_h = check_positive("norm_h", norm_h)
        self.needs_weights = self.lambda_pp > 0 and self.pp_scope == "shard"
        self.uses_norm_stats = self.kappa_scale is not None or self.margin == "quality"
        if self.uses_norm_stats:
            self.norm_stat = RunningStat(self, "norm_mean", "norm_std", momentum=self.momentum, counts=False)
        self.kappa_stat = RunningStat(self, "running_mean", momentum=self.momentum)
        self._record(alpha=self.alpha, kappa_min=self.kappa_min, kappa_max=self.kappa_max, margin=margin,
                     momentum=self.momentum, vmf_dim=self.vmf_dim, lambda_pps=self.lambda_pps,
                     lambda_pns=self.lambda_pns, lambda_pp=self.lambda_pp, tau_pns=self.tau_pns, s_pp=self.s_pp,
                     pp_scope=self.pp_scope, kappa_scale=self.kappa_scale, rel_min=self.rel_min,
                     rel_max=self.rel_max, clamp_grad=self.clamp_grad, margin_spread=self.margin_spread,
                     norm_h=self.norm_h)

    def _bounded(self, x: torch.Tensor, low: float, high: float) -> torch.Tensor:
        y = x.clamp(max=high)
        if self.clamp_grad:
            return y + (y.clamp(min=low) - y).detach()
        return y.clamp(min=low)

    def plan(self, inp: HeadInputs) -> HeadPlan:
        ctx = inp.ctx
        if self.uses_norm_stats:
            nu, sigma = self.norm_stat(inp.norms, ctx)
            nu = (nu if nu is not None else inp.norms.new_tensor(1.0)).clamp_min(1e-6)
            sigma = sigma if sigma is not None else inp.norms.new_tensor(1.0)
        if self.kappa_scale is None:
            kappa = self._bounded(inp.norms, self.kappa_min, self.kappa_max)
        else:
            kappa = self.kappa_scale * self._bounded(inp.norms / nu, self.rel_min, self.rel_max)
        mu = self.kappa_stat(kappa, ctx)[0]
        mu = mu if mu is not None else kappa.new_tensor(self.kappa_min)
        kt = kappa[inp.pos]
        if self.margin == "quality":
            q = ((inp.norms.detach()[inp.pos] - nu) / (sigma / self.norm_h + 1e-3)).clamp(-1.0, 1.0)
            m_i = self.alpha * (1.0 + self.margin_spread * q)

            def psi(c, k, mi):
                return k * (c - mi)

            args = (kt, m_i)
        elif self.margin == "mean":
            m = self.alpha * mu

            def psi(c, k):
                return k * c - m

            args = (kt,)
        else:
            m_i = (self.alpha * kt / mu).detach()

            def psi(c, k, mi):
                return k * (c - mi)

            args = (kt, m_i)

        n = max(1, inp.num_rows)
        terms, row_terms = {}, {}
        if self.lambda_pps > 0:
            nll = -(log_cn(kt, self.vmf_dim) + kt * inp.target_cosine)
            terms["pps"] = self.lambda_pps * global_sum(nll.sum(), ctx) / n
        if self.lambda_pns > 0:
            tau = self.tau_pns
            row_terms["pns"] = RowTerm(lambda x: (x - tau).relu_(), self.lambda_pns)
        if self.lambda_pp > 0:
            terms["pp"] = self.lambda_pp * self._proxy_proxy(inp)
        return HeadPlan(LogitSpec(psi, args, scale=kappa), terms, row_terms, {"mu": mu.detach()})

    def _proxy_proxy(self, inp: HeadInputs) -> torch.Tensor:
        """L_pp: mean over the batch's positive proxies u of (1/s) logsumexp_{j != u} s cos(w_u, w_j)."""
        ctx = inp.ctx
        local_cls = torch.unique(inp.target)
        own = all_gather_rows(inp.proxies(local_cls), ctx)
        sizes = all_gather_rows(torch.tensor([local_cls.numel()], device=own.device), ctx)
        start = int(sizes[: ctx.rank].sum()) if ctx.sharded else 0
        if self.pp_scope == "batch":
            # the gathered positive proxies are the same on every rank: a local, unsharded product
            sim = (own @ own.t()) * self.s_pp
            eye = torch.eye(own.shape[0], dtype=torch.bool, device=own.device)
            lse = torch.logsumexp(sim.masked_fill(eye, float("-inf")), dim=1)
            valid = torch.isfinite(lse)
            total = torch.where(valid, lse, torch.zeros_like(lse)).sum()
            count = int(valid.sum())
            # every rank holds the whole value: keep it once in the shard sum
            total = total if not ctx.sharded else total * (1.0 if ctx.rank == 0 else 0.0)
            return global_sum(total, ctx) / (max(1, count) * self.s_pp)
        exclude = torch.full((own.shape[0],), -1, dtype=torch.long, device=own.device)
        exclude[start:start + local_cls.numel()] = local_cls
        lse = matmul_logsumexp(own, inp.weights, self.s_pp, exclude=exclude, ctx=ctx)
        valid = torch.isfinite(lse)
        lse = torch.where(valid, lse, torch.zeros_like(lse))
        return lse.sum() / (max(1, int(valid.sum())) * self.s_pp)
