"""Rendering dataset views in chunks, in worker processes when asked; results in order."""
from __future__ import annotations

import multiprocessing
from typing import Any, Dict, Iterable, Sequence

import numpy as np
import torch

from .. import face3d
from .crops import loose_crop
from .identities import Identity
from .quality import degrade
from .views import Views, frontal_views, render_views

__all__ = ["Runner", "run_job", "make_jobs"]


def run_job(job: Dict[str, Any]) -> Dict[str, Any]:
    """Render one chunk of views (runs in a worker process)."""
    maps = face3d.build_maps(job["params"], job["size"])
    views: Views = job["views"]
    out = render_views(maps, views)
    kind = job["kind"]
    if kind == "arrays":
        front = render_views(maps, frontal_views(views))
        return {"render": out, "frontal": front}
    result: Dict[str, Any] = {"jpeg": [], "landmarks": out["landmarks"]}
    for i in range(views.n):
        img, data = degrade(out["image"][i], views.degradation[i], int(views.noise_seed[i]))
        if kind == "loose":
            data, lm = loose_crop(img, out["landmarks"][i], np.random.default_rng(int(views.noise_seed[i]) + 1))
            result["landmarks"][i] = lm
        result["jpeg"].append(data)
    return result


def make_jobs(identities: Sequence[Identity], views: Views, size: int, kind: str,
              chunk: int) -> Iterable[Dict[str, Any]]:
    """Split ``views`` (whose ``ident`` index ``identities``) into jobs of about ``chunk`` views."""
    for s in range(0, views.n, chunk):
        v = views.subset(range(s, min(s + chunk, views.n)))
        used, local = np.unique(v.ident, return_inverse=True)
        v.ident = local.astype(np.int64)
        params = np.stack([identities[i].params for i in used])
        yield {"params": params, "views": v, "size": size, "kind": kind}


def _worker_init() -> None:
    torch.set_num_threads(1)


class Runner:
    """Runs jobs in order, in ``workers`` processes when ``workers > 1``."""

    def __init__(self, workers: int) -> None:
        self.pool = None
        if workers > 1:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            self.pool = ctx.Pool(workers, initializer=_worker_init)

    def map(self, jobs: Iterable[Dict[str, Any]]) -> Iterable[Dict[str, Any]]:
        if self.pool is None:
            return map(run_job, jobs)
        return self.pool.imap(run_job, jobs)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None
