"""Rendezvous for multi-process tests: a file store in a fresh folder, never a probed port.

Probing a free port (bind, close, hand the number on) races with every other process on
the machine; a file store cannot collide. Use::

    init_method = file_rendezvous(tmp_path)            # in the parent, once per group
    mp.spawn(worker, args=(world, init_method, ...), nprocs=world)
    # in each worker:
    init_group(init_method, rank, world)
"""
from __future__ import annotations

import os
import sys
import tempfile

import torch
import torch.distributed as dist

__all__ = ["file_rendezvous", "init_group", "leave_worker", "sharded_cross_entropy"]


def file_rendezvous(folder) -> str:
    """``file://`` init method on a new, not yet existing file inside ``folder``."""
    return "file://" + os.path.join(tempfile.mkdtemp(prefix="rendezvous_", dir=os.fspath(folder)), "store")


def init_group(init_method: str, rank: int, world_size: int, backend: str = "gloo") -> None:
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size)


def leave_worker() -> None:
    """End a spawned worker whose results are written: destroy its process group, flush, and exit without the
    interpreter's teardown, where a gloo thread still joinable can abort a finished worker ('terminate called
    without an active exception', SIGABRT after rank 0 had written complete results: seen once in the mxnet
    env). Only for spawned processes, never for a worker run inside the test process."""
    if dist.is_initialized():
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def sharded_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ctx) -> torch.Tensor:
    """The tests' dense reference: mean softmax cross-entropy of [N, C_shard] logits whose classes are
    split over ``ctx``'s shards (labels: [N] column on this shard or -1); the global value on every
    rank, this rank's part of the gradient, written from the definition without the head engine."""
    from lh2face_plugin.distributed import global_sum

    labels = labels.reshape(-1)
    row_max = logits.detach().amax(dim=1) if logits.shape[1] else logits.new_full((logits.shape[0],), float("-inf"))
    if ctx.sharded:
        dist.all_reduce(row_max, op=dist.ReduceOp.MAX, group=ctx.group)
    shift = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    lse = torch.log(global_sum(torch.exp(logits - shift[:, None]).sum(dim=1), ctx)) + shift
    pos = torch.nonzero(labels >= 0).reshape(-1)
    target = logits.new_zeros(logits.shape[0]).index_put((pos,), logits[pos, labels[pos]])
    return (lse - global_sum(target, ctx)).mean()
