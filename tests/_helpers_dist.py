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
import tempfile

import torch.distributed as dist

__all__ = ["file_rendezvous", "init_group"]


def file_rendezvous(folder) -> str:
    """``file://`` init method on a new, not yet existing file inside ``folder``."""
    return "file://" + os.path.join(tempfile.mkdtemp(prefix="rendezvous_", dir=os.fspath(folder)), "store")


def init_group(init_method: str, rank: int, world_size: int, backend: str = "gloo") -> None:
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size)
