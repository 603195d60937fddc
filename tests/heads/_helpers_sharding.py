"""Sharded reference harness: a head on classes split over W gloo processes vs one process.

Every rank builds the same global problem (raw embeddings z [N, D], proxies
w [C, D], labels), optionally a sampled class subset S (all positives plus
random negatives, as Partial FC samples). Rank r owns the contiguous classes
of Partial FC's split, computes its cosines, calls the head with
``DistContext(W, r)``, adds the extra term to the sharded cross-entropy and
backpropagates. The embedding gradients of all ranks are summed (what Partial
FC's AllGather backward does) and compared with the single-process gradient;
each rank's proxy gradient is compared with its slice of the single-process
one. Stateful heads run several steps so running means, memories and
thresholds are compared too.
"""
from __future__ import annotations

import json
import os
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from lh2face_plugin.distributed import DistContext, sharded_cross_entropy

N, C, D, STEPS = 12, 11, 6, 3


def shard_range(rank, world):
    num_local = C // world + int(rank < C % world)
    start = C // world * rank + min(rank, C % world)
    return start, start + num_local


def problem(sampled: bool):
    from _helpers_heads import make_inputs

    z, w, labels = make_inputs(n=N, c=C, d=D, seed=3)
    if sampled:
        g = torch.Generator().manual_seed(5)
        neg = [j for j in torch.randperm(C, generator=g).tolist() if j not in set(labels.tolist())][:2]
        subset = torch.tensor(sorted(set(labels.tolist()) | set(neg)))
    else:
        subset = torch.arange(C)
    return z, w, labels, subset


def run_steps(head, z, w, labels, subset, ctx, start, end):
    """STEPS training steps; returns per step (loss, grad_z, grad_w [end-start, D])."""
    from lh2face_plugin.heads.base import Head  # noqa: F401  (import check in the child)

    own = subset[(subset >= start) & (subset < end)]
    local_index = own - start
    col = {int(c): i for i, c in enumerate(own.tolist())}
    local_labels = torch.tensor([col.get(int(y), -1) for y in labels])
    out = []
    for step in range(STEPS):
        zs = (z + 0.05 * step * torch.sin(torch.arange(z.numel(), dtype=z.dtype).reshape(z.shape))).requires_grad_()
        ws = w[start:end].clone().requires_grad_()
        x = F.normalize(zs, dim=1)
        wn = F.normalize(ws, dim=1)[local_index]
        cos = (x @ wn.t()).clamp(-1, 1)
        res = head(cos, local_labels, norms=zs.norm(dim=1), embeddings=x, weights=wn,
                   class_index=None if len(own) == end - start and ctx.world_size == 1 and len(subset) == C
                   else local_index, ctx=ctx)
        logits, extra = res if isinstance(res, tuple) else (res, None)
        loss = sharded_cross_entropy(logits, local_labels, ctx)
        if extra is not None:
            loss = loss + extra
        loss.backward()
        out.append((loss.detach(), zs.grad, ws.grad))
    return out


def _worker(rank, world, init_method, cases, result_file):
    try:
        from _helpers_dist import init_group

        init_group(init_method, rank, world)
        from _helpers_heads import build

        report = {}
        for case_id, name, kwargs in cases:
            for sampled in (False, True):
                z, w, labels, subset = problem(sampled)
                torch.manual_seed(0)
                ref_head = build(name, kwargs, C, D)
                ref = run_steps(ref_head, z, w, labels, subset, DistContext.single(), 0, C)
                start, end = shard_range(rank, world)
                head = build(name, kwargs, end - start, D)
                got = run_steps(head, z, w, labels, subset, DistContext(world, rank), start, end)
                worst = {"loss": 0.0, "grad_z": 0.0, "grad_w": 0.0}
                for (rl, rgz, rgw), (gl, ggz, ggw) in zip(ref, got):
                    ggz = ggz.clone()
                    dist.all_reduce(ggz)
                    worst["loss"] = max(worst["loss"], (rl - gl).abs().item())
                    worst["grad_z"] = max(worst["grad_z"], (rgz - ggz).abs().max().item())
                    worst["grad_w"] = max(worst["grad_w"], (rgw[start:end] - ggw).abs().max().item())
                    worst["scale"] = max(worst.get("scale", 0.0), rl.abs().item(), rgz.abs().max().item())
                t = torch.tensor([worst["loss"], worst["grad_z"], worst["grad_w"]], dtype=torch.float64)
                dist.all_reduce(t, op=dist.ReduceOp.MAX)
                report[f"{case_id}|{'sampled' if sampled else 'full'}"] = {
                    "loss": t[0].item(), "grad_z": t[1].item(), "grad_w": t[2].item(), "scale": worst["scale"]}
        if rank == 0:
            with open(result_file, "w") as fh:
                json.dump(report, fh)
        dist.destroy_process_group()
    except Exception:
        with open(f"{result_file}.err{rank}", "w") as fh:
            fh.write(traceback.format_exc())
        raise


def run_sharded(world, cases, tmpdir):
    """Spawn ``world`` gloo processes over ``cases``; returns {case|mode: max abs differences}."""
    from _helpers_dist import file_rendezvous

    result_file = os.path.join(tmpdir, f"result{world}.json")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        mp.spawn(_worker, args=(world, file_rendezvous(tmpdir), cases, result_file), nprocs=world, join=True)
    except Exception as exc:
        errs = [open(os.path.join(tmpdir, f)).read() for f in os.listdir(tmpdir) if ".err" in f]
        raise RuntimeError("sharded worker failed:\n" + "\n".join(errs)) from exc
    with open(result_file) as fh:
        return json.load(fh)
