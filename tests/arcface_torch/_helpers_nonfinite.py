"""Worker of the non-finite test: a NaN in one rank's embeddings or class proxies, 2 gloo ranks."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

import lh2face_plugin

B, C, D = 4, 40, 16
CASES = [(where, policy, blockwise) for where in ("embedding", "proxy") for policy in ("nan", "raise")
         for blockwise in (False, True)]


def worker(rank: int, world: int, root: str, init_method: str, out_dir: str) -> None:
    from _helpers_pfc_dist import host_worker

    _, PFC = host_worker(rank, world, root, init_method)
    results = {}
    for where, policy, blockwise in CASES:
        for name in ("lh2face", "arcface"):
            pfc = PFC(lh2face_plugin.build_head(name), D, C, 1.0, False, blockwise=blockwise, nonfinite=policy)
            g = torch.Generator().manual_seed(rank)
            emb = torch.randn(B, D, generator=g) * 4
            labels = torch.randint(0, C, (B,), generator=g)
            if rank == 1 and where == "embedding":
                emb[2] = float("nan")
            if rank == 1 and where == "proxy":
                with torch.no_grad():
                    pfc.weight[3] = float("nan")
            emb.requires_grad_()
            key = f"{name}/{where}/{policy}/{'blockwise' if blockwise else 'dense'}"
            try:
                loss = pfc(emb, labels)
                loss.backward()
                results[key] = dict(loss=float(loss), grad_finite=bool(torch.isfinite(pfc.weight.grad).all()))
            except FloatingPointError as exc:
                results[key] = dict(error=str(exc))
            dist.barrier()
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    from _helpers_dist import leave_worker

    leave_worker()
