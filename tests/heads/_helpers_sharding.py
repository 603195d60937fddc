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

The same processes also check :func:`blockwise_checks` (matmul_logsumexp over shards) and
:func:`data_parallel_checks` (batch statistics all-reduced over data-parallel ranks), so the
whole file costs one process start per world size.
"""
from __future__ import annotations

import json
import os
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from _helpers_dist import leave_worker, sharded_cross_entropy

from lh2face_plugin.distributed import DistContext

N, C, D, STEPS = 12, 11, 6, 3


def shard_range(rank, world):
    num_local = C // world + int(rank < C % world)
    start = C // world * rank + min(rank, C % world)
    return start, start + num_local


def problem(sampled: bool):
    from _helpers_heads import make_inputs

    # rows of label 0 (rank 0's first column), -1 (a class on no shard) and C - 1 (the last rank's last column)
    z, w, labels = make_inputs(n=N, c=C, d=D, seed=3, off_shard=True)
    if sampled:
        g = torch.Generator().manual_seed(5)
        positives = {y for y in labels.tolist() if y >= 0}
        neg = [j for j in torch.randperm(C, generator=g).tolist() if j not in positives][:2]
        subset = torch.tensor(sorted(positives | set(neg)))
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
        res = head.evaluate(cos, local_labels, norms=zs.norm(dim=1), embeddings=x, weights=wn,
                   class_index=None if len(own) == end - start and ctx.world_size == 1 and len(subset) == C
                   else local_index, ctx=ctx)
        loss = sharded_cross_entropy(res.logits, local_labels, ctx)
        if res.extra is not None:
            loss = loss + res.extra
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
        report.update(blockwise_checks(world, rank))
        report.update(data_parallel_checks(world, rank))
        if rank == 0:
            with open(result_file, "w") as fh:
                json.dump(report, fh)
    except Exception:
        with open(f"{result_file}.err{rank}", "w") as fh:
            fh.write(traceback.format_exc())
        raise
    leave_worker()


def _max_over_ranks(values):
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def blockwise_checks(world, rank):
    """matmul_logsumexp with the columns split over the ranks, in small column blocks: the value is the
    global one on every rank, the gradients of the rows summed over ranks and each rank's column
    gradient equal the single-process ones. Rank 0 of the world-3 split has no unmasked column."""
    from lh2face_plugin.layers.products import matmul_logsumexp

    g = torch.Generator().manual_seed(11)
    rows, dim = 6, 4
    a = torch.randn(rows, dim, dtype=torch.float64, generator=g)
    b = torch.randn(C, dim, dtype=torch.float64, generator=g)
    col_mask = torch.ones(C, dtype=torch.bool)
    col_mask[:4] = False
    exclude = torch.tensor([5, -1, 10, 4, 7, -1])  # global columns
    weights = torch.randn(rows, dtype=torch.float64, generator=g)
    start, end = shard_range(rank, world)
    out = {}
    for sampled in (False, True):
        cols = torch.tensor([0, 2, 4, 5, 7, 8, 10]) if sampled else torch.arange(C)
        position = {int(c): i for i, c in enumerate(cols.tolist())}
        global_exclude = torch.tensor([position.get(int(e), -1) for e in exclude])

        aa, bb = a.clone().requires_grad_(), b.clone().requires_grad_()
        ref = matmul_logsumexp(aa, bb, 2.0, index=cols, exclude=global_exclude, col_mask=col_mask[cols],
                               block_elements=7)
        (ref * weights).sum().backward()

        own = cols[(cols >= start) & (cols < end)]
        local_position = {int(c): i for i, c in enumerate(own.tolist())}
        local_exclude = torch.tensor([local_position.get(int(e), -1) for e in exclude])
        la, lb = a.clone().requires_grad_(), b[start:end].clone().requires_grad_()
        got = matmul_logsumexp(la, lb, 2.0, index=own - start, exclude=local_exclude, col_mask=col_mask[own],
                               ctx=DistContext(world, rank), block_elements=7)
        (got * weights).sum().backward()
        grad_a = la.grad.clone()
        dist.all_reduce(grad_a)
        diffs = _max_over_ranks([(got - ref).abs().max().item(), (grad_a - aa.grad).abs().max().item(),
                                 (lb.grad - bb.grad[start:end]).abs().max().item()])
        out[f"matmul_logsumexp|{'sampled' if sampled else 'full'}"] = {
            "value": diffs[0], "grad_a": diffs[1], "grad_b": diffs[2], "scale": ref.abs().max().item()}
    return out


def data_parallel_checks(world, rank):
    """Batch statistics in data parallel (each rank its own rows, all the classes): AdaFace's norm
    statistics, CurricularFace's t and MagFace's logged means equal those of one process seeing every
    row, and so do each rank's logits."""
    from _helpers_heads import TEST_KWARGS, build, make_inputs

    out = {}
    for name in ("adaface", "curricularface", "magface"):
        z, w, labels = make_inputs(n=N, c=C, d=D, seed=8, off_shard=True)
        mine = torch.arange(N)[rank::world]
        heads = {"ref": build(name, TEST_KWARGS[name], C, D), "dp": build(name, TEST_KWARGS[name], C, D)}
        worst = [0.0, 0.0, 0.0]
        for step in range(STEPS):
            zs = z * (1 + 0.2 * step) + 0.05 * step
            x, wn = F.normalize(zs, dim=1), F.normalize(w, dim=1)
            cos = x @ wn.t()
            ref = heads["ref"].evaluate(cos, labels, norms=zs.norm(dim=1), ctx=DistContext.single())
            got = heads["dp"].evaluate(cos[mine], labels[mine], norms=zs.norm(dim=1)[mine],
                              ctx=DistContext(world, rank, gathered=False))
            state = [(u - v).abs().max().item() for u, v in zip(heads["ref"].buffers(), heads["dp"].buffers())
                     if u.is_floating_point()]
            stats = [abs(ref.stats[k].item() - got.stats[k].item()) for k in ref.stats]
            worst = [max(worst[0], (ref.logits[mine] - got.logits).abs().max().item()), max([worst[1]] + state),
                     max([worst[2]] + stats)]
        worst = _max_over_ranks(worst)
        out[f"data_parallel|{name}"] = {"logits": worst[0], "state": worst[1], "stats": worst[2],
                                        "buffers": len(list(heads["ref"].buffers()))}
    return out


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
