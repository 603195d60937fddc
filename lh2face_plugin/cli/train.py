"""``lh2face train RECIPE``: arcface_torch's training flow with the plugin active."""
from __future__ import annotations

import argparse

from ._common import add_command

EXAMPLES = """
  lh2face train recipes/ms1mv3_r50_lh2face.py --arcface-root ~/insightface/recognition/arcface_torch
  torchrun --nproc_per_node=8 -m lh2face_plugin.train recipes/ms1mv3_r100_lh2face.py
  torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --master_addr=10.0.0.1 --master_port=29500 \\
      -m lh2face_plugin.train recipes/wf42m_pfc02_r100_lh2face.py
  lh2face train recipes/smoke_synthetic_cpu.py --cpu      # a few CPU steps, checks the wiring
"""


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("recipe", help="recipe file (anywhere) or a name in the checkout's configs/")
    p.add_argument("--arcface-root", help="arcface_torch folder (default: $ARCFACE_TORCH_ROOT, then the cwd)")
    p.add_argument("--strict", action="store_true", help="refuse a checkout whose revision is unknown")
    p.add_argument("--cpu", action="store_true", help="run on the CPU (smoke runs; CUDA calls neutralised)")
    p.add_argument("--backend", choices=("nccl", "gloo"), help="process-group backend (default: nccl with CUDA)")
    return p


def run(args: argparse.Namespace) -> int:
    from ..arcface_torch.train import run as train  # lazy: start-up

    train(args.recipe, arcface_root=args.arcface_root, strict=args.strict, cpu=args.cpu, backend=args.backend)
    return 0


def register(subparsers) -> None:
    add_arguments(add_command(subparsers, "train", "train a recipe with arcface_torch's train_v2 and the plugin",
                              EXAMPLES, run))
