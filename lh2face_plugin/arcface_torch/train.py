"""Run arcface_torch's own training flow (``train_v2.main``) with the plugin active.

Steps: locate the checkout and check its revision, load and validate the
recipe, make mxnet and torchvision importable (:func:`.compat.ensure_mxnet`,
:func:`.compat.ensure_torchvision`), initialise
torch.distributed (from torchrun's environment, or a world of one), import
``train_v2`` from the checkout (its own process-group initialisation is then
skipped), activate, and call ``train_v2.main``. Data loading, DDP, the LR
schedule, logging, verification and checkpoints are arcface_torch's.
"""
from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.distributed as dist

from ..fileio import scratch_folder
from .activate import Activation, deactivate
from .compat import cpu_only, ensure_mxnet, ensure_torchvision, tolerate_second_init
from .config import check_job_keys, load_recipe
from .locate import Checkout, locate_checkout
from .revision import check_revision

__all__ = ["TrainSetup", "prepare", "run"]


@dataclass
class TrainSetup:
    """What :func:`prepare` resolved: checkout, revision note, recipe, mxnet, and the activation
    (the checked plugin keys and the parts built from them) to attach to ``train_v2``."""

    checkout: Checkout
    revision: str
    cfg: dict
    mxnet: str
    torchvision: str
    activation: Activation

    def describe(self) -> str:
        spec = self.activation.spec
        loss = (spec.describe_loss(self.activation.head) if spec.loss
                else f"arcface_torch CombinedMarginLoss margin_list={tuple(self.cfg.get('margin_list', ()))}")
        lines = [self.checkout.describe(), f"  {self.revision}", f"recipe {self.cfg['recipe_path']}",
                 f"  loss: {loss}", f"  sample_rate: {self.cfg.get('sample_rate', 1.0)}",
                 f"  output: {self.cfg['output']}", f"mxnet: {self.mxnet}", f"torchvision: {self.torchvision}"]
        if spec.input_module:
            lines.insert(4, f"  input module: {spec.input_module} {spec.input_module_kwargs}")
        lines += [f"note: {line}" for line in spec.unused]
        return "\n".join(lines)


def prepare(recipe: str, arcface_root: Optional[str] = None, strict: bool = False) -> TrainSetup:
    """Locate, check and load everything without starting anything; the plugin's keys are
    checked and its parts built once, here.

    Raises:
        FileNotFoundError: no checkout / recipe. RuntimeError: unknown revision with ``strict``.
        ValueError / KeyError / TypeError: invalid recipe (the message names the key).
    """
    checkout = locate_checkout(arcface_root)
    report = check_revision(checkout.root, strict=strict)
    if checkout.root not in sys.path:
        sys.path.insert(0, checkout.root)
    cfg = load_recipe(recipe, checkout.root)
    check_job_keys(cfg)
    activation = Activation(cfg, source="lh2face train").build()
    return TrainSetup(checkout, report.describe(), cfg, ensure_mxnet(), ensure_torchvision(), activation)


def _init_distributed(backend: str) -> Tuple[bool, Optional[str]]:
    """Initialise the default group unless one exists.

    Returns:
        Whether this call initialised it, and the rendezvous folder it made (a world of one
        meets through a file there, never a probed port; remove it afterwards) or ``None``.
    """
    if dist.is_initialized():
        return False, None
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        dist.init_process_group(backend)
        return True, None
    folder = scratch_folder("lh2face_rendezvous_")
    dist.init_process_group(backend, init_method=f"file://{os.path.join(folder, 'store')}", rank=0, world_size=1)
    return True, folder


def run(recipe: str, arcface_root: Optional[str] = None, strict: bool = False, cpu: bool = False,
        backend: Optional[str] = None, quiet: bool = False) -> TrainSetup:
    """Train ``recipe`` with arcface_torch's ``train_v2.main`` and the plugin active.

    Args:
        recipe: recipe path (anywhere) or ``configs/`` name of the checkout.
        arcface_root: checkout (default: ``$ARCFACE_TORCH_ROOT``, then the cwd).
        strict: refuse a checkout whose revision is unknown.
        cpu: neutralise CUDA calls (:func:`.compat.cpu_only`) for smoke runs.
        backend: process-group backend (default: nccl with CUDA, else gloo).
        quiet: do not print the resolved setup.

    Raises:
        RuntimeError: no CUDA and not ``cpu``; see also :func:`prepare`.
    """
    setup = prepare(recipe, arcface_root, strict)
    if not cpu and not torch.cuda.is_available():
        raise RuntimeError("arcface_torch's train_v2 needs CUDA and none is available here; "
                           "pass --cpu for a CPU smoke run (e.g. recipes/smoke_synthetic_cpu.py)")
    rank = int(os.environ.get("RANK", 0))
    if not quiet and rank == 0:
        print(setup.describe(), flush=True)
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() and not cpu else "gloo"
    owns_group, rendezvous = _init_distributed(backend)
    try:
        with tolerate_second_init():
            trainer = importlib.import_module("train_v2")
        deactivate(trainer)                      # a previous run in this process
        setup.activation.attach(trainer)
        args = argparse.Namespace(config=setup.cfg["recipe_path"])
        if cpu:
            with cpu_only(sys.modules.get("utils.utils_distributed_sampler")):
                trainer.main(args)
        else:
            trainer.main(args)
    finally:
        setup.activation.detach()
        if owns_group and dist.is_initialized():
            dist.destroy_process_group()
        if rendezvous is not None:
            shutil.rmtree(rendezvous, ignore_errors=True)
    return setup
