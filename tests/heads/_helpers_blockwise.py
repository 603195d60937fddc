"""Blockwise layer on W gloo ranks vs the dense layer on one process.

Same global problem as :mod:`_helpers_sharding` (raw embeddings, proxies, labels,
optionally sampled classes). The reference runs each head densely on one process
(``head.evaluate(cosine, ...)`` + the sharded cross-entropy of a world of 1); every rank runs
:func:`lh2face_plugin.layers.blockwise.blockwise_head_loss` on its class shard with tiny
blocks, so each call crosses many block boundaries. Losses, embedding gradients
(summed over ranks, as Partial FC's AllGather backward does), proxy gradients and the
head's state after every step are compared.
"""
from __future__ import annotations

import json
import os
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from _helpers_dist import sharded_cross_entropy
from _helpers_sharding import C, D, STEPS, problem, shard_range

from lh2face_plugin.distributed import DistContext

BLOCK = 7  # entries per block: blocks of a column or two at N = 12


def _inputs(z, step):
    return (z + 0.05 * step * torch.sin(torch.arange(z.numel(), dtype=z.dtype).reshape(z.shape))).requires_grad_()


def dense_steps(head, z, w, labels, subset):
    """The reference: one process, dense logits, all classes (or the sampled subset)."""
    col = {int(c): i for i, c in enumerate(subset.tolist())}
    y = torch.tensor([col.get(int(v), -1) for v in labels])  # -1: a class on no shard
    index = None if len(subset) == C else subset
    out = []
    for step in range(STEPS):
        zs, ws = _inputs(z, step), w.clone().requires_grad_()
        x = F.normalize(zs, dim=1)
        wn = F.normalize(ws if index is None else ws[index], dim=1)
        res = head.evaluate((x @ wn.t()).clamp(-1, 1), y, norms=zs.norm(dim=1), embeddings=x, weights=wn,
                   class_index=index, ctx=DistContext.single())
        loss = sharded_cross_entropy(res.logits, y, DistContext.single())
        loss = loss if res.extra is None else loss + res.extra
        loss.backward()
        out.append((loss.detach(), zs.grad, ws.grad, _state(head)))
    return out


def blockwise_steps(head, z, w, labels, subset, ctx, start, end, cache=False):
    from lh2face_plugin.layers.blockwise import blockwise_head_loss

    own = subset[(subset >= start) & (subset < end)]
    sampled = len(subset) < C
    col = {int(c): i for i, c in enumerate(own.tolist())}
    y = torch.tensor([col.get(int(v), -1) for v in labels])
    out = []
    for step in range(STEPS):
        zs, ws = _inputs(z, step), w[start:end].clone().requires_grad_()
        loss, parts = blockwise_head_loss(head, F.normalize(zs, dim=1), ws, y, norms=zs.norm(dim=1),
                                          index=(own - start) if sampled else None, ctx=ctx, block_elements=BLOCK,
                                          cache_cosine=cache)
        loss.backward()
        out.append((loss.detach(), zs.grad, ws.grad, _state(head)))
    return out


def _state(head):
    return {k: v.detach().clone() for k, v in head.state_dict().items() if torch.is_tensor(v)}


def _worker(rank, world, init_file, cases, result_file, cache=False):
    try:
        if world > 1:
            dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
        from _helpers_heads import build

        ctx = DistContext(world, rank) if world > 1 else DistContext.single()
        report = {}
        for case_id, name, kwargs in cases:
            for sampled in (False, True):
                z, w, labels, subset = problem(sampled)
                torch.manual_seed(0)
                ref = dense_steps(build(name, kwargs, C, D), z, w, labels, subset)
                start, end = shard_range(rank, world)
                torch.manual_seed(0)
                got = blockwise_steps(build(name, kwargs, end - start, D), z, w, labels, subset, ctx, start, end,
                                      cache)
                worst = {"loss": 0.0, "grad_z": 0.0, "grad_w": 0.0, "state": 0.0, "scale": 0.0}
                for (rl, rgz, rgw, rs), (gl, ggz, ggw, gs) in zip(ref, got):
                    ggz = ggz.clone()
                    if world > 1:
                        dist.all_reduce(ggz)
                    worst["loss"] = max(worst["loss"], (rl - gl).abs().item())
                    worst["grad_z"] = max(worst["grad_z"], (rgz - ggz).abs().max().item())
                    worst["grad_w"] = max(worst["grad_w"], (rgw[start:end] - ggw).abs().max().item())
                    worst["scale"] = max(worst["scale"], rl.abs().item(), rgz.abs().max().item())
                    for k, v in rs.items():
                        mine = gs[k]
                        if v.dim() and v.shape[0] == C and mine.shape[0] == end - start:
                            v = v[start:end]
                        worst["state"] = max(worst["state"], (v.double() - mine.double()).abs().max().item()
                                             if v.numel() else 0.0)
                t = torch.tensor([worst[k] for k in ("loss", "grad_z", "grad_w", "state")], dtype=torch.float64)
                if world > 1:
                    dist.all_reduce(t, op=dist.ReduceOp.MAX)
                report[f"{case_id}|{'sampled' if sampled else 'full'}"] = {
                    "loss": t[0].item(), "grad_z": t[1].item(), "grad_w": t[2].item(), "state": t[3].item(),
                    "scale": worst["scale"]}
        if rank == 0:
            with open(result_file, "w") as fh:
                json.dump(report, fh)
    except Exception:
        with open(f"{result_file}.err{rank}", "w") as fh:
            fh.write(traceback.format_exc())
        raise
    if world > 1:
        from _helpers_dist import leave_worker

        leave_worker()


def run_blockwise(world, cases, tmpdir, cache=False):
    """Run ``cases`` on ``world`` ranks (in this process for 1), recomputing the cosine blocks in the
    backward or keeping them (``cache``); {case|mode: max abs differences}."""
    init_file = os.path.join(tmpdir, f"init{world}")
    result_file = os.path.join(tmpdir, f"result{world}.json")
    if world == 1:
        _worker(0, 1, init_file, cases, result_file, cache)
    else:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        try:
            mp.spawn(_worker, args=(world, init_file, cases, result_file, cache), nprocs=world, join=True)
        except Exception as exc:
            errs = [open(os.path.join(tmpdir, f)).read() for f in os.listdir(tmpdir) if ".err" in f]
            raise RuntimeError("blockwise worker failed:\n" + "\n".join(errs)) from exc
    with open(result_file) as fh:
        return json.load(fh)
