"""A NaN on one rank only ends the same way on every rank (issue 22, item 3): with nonfinite='nan' the
loss is NaN on all ranks (a GradScaler skips the step), with 'raise' every rank raises the same one-line
error after one collective; no rank is left waiting."""
from __future__ import annotations

import math
import time

import pytest
import torch
import torch.multiprocessing as mp

import _helpers_nonfinite as H
from _helpers_dist import file_rendezvous

WORLD = 2
pytestmark = pytest.mark.arcface_torch


@pytest.fixture(scope="module")
def ranks(arcface_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("nonfinite")
    procs = mp.start_processes(H.worker, args=(WORLD, arcface_root, file_rendezvous(out), str(out)), nprocs=WORLD,
                               join=False, start_method="spawn")
    deadline = time.monotonic() + 240
    while not procs.join(timeout=5):
        if time.monotonic() > deadline:
            for p in procs.processes:
                p.kill()
            pytest.fail("a rank was left waiting: the 2-rank run did not finish in 240 s")
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.mark.parametrize("key", [f"{n}/{w}/{p}/{'blockwise' if b else 'dense'}" for w, p, b in H.CASES
                                 for n in ("lh2face", "arcface")])
def test_a_nan_on_one_rank_ends_alike_on_every_rank(ranks, key):
    got = [r[key] for r in ranks]
    policy = key.split("/")[2]
    if policy == "nan":
        assert all("error" not in g for g in got), got
        assert all(math.isnan(g["loss"]) for g in got), got
    else:
        assert all("error" in g for g in got), got
        assert got[0]["error"] == got[1]["error"]
        assert "\n" not in got[0]["error"]
        if "/proxy/" in key:
            assert "rank 1's shard" in got[0]["error"] and "column 3" in got[0]["error"], got[0]["error"]
        else:
            assert "row 6" in got[0]["error"], got[0]["error"]   # global row: rank 1, row 2 of its batch
