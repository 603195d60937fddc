"""Training-step cost of the compact backbones, as ratios to a baseline measured in the same run.

The baseline is arcface_torch's MobileFaceNet (``mbf``) when a checkout is
given (--arcface-root or ARCFACE_TORCH_ROOT; ``r18`` is added with --r18),
else ``compact-tiny``. A step is forward + backward of ``mean(emb ** 2)`` +
SGD at the given batch on CPU; the table shows the median of --steps timed
steps after one warm-up step.

    OMP_NUM_THREADS=2 python benchmarks/backbones.py --batch 64 --steps 5
"""
from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from lh2face_plugin.backbones import available_backbones, build_backbone


def step_seconds(model: torch.nn.Module, batch: int, steps: int) -> float:
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.rand(batch, 3, 112, 112) * 2 - 1
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        model(x).square().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def forward_mflops(model: torch.nn.Module) -> float:
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 112, 112))
    return counter.get_total_flops() / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    ap.add_argument("--arcface-root", default=os.environ.get("ARCFACE_TORCH_ROOT"))
    ap.add_argument("--r18", action="store_true", help="also time arcface_torch's r18 (slow on CPU)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    nets = []
    if args.arcface_root:
        sys.path.insert(0, os.path.abspath(args.arcface_root))
        get_model = importlib.import_module("backbones").get_model
        nets.append(("arcface_torch mbf", get_model("mbf", num_features=512)))
        if args.r18:
            nets.append(("arcface_torch r18", get_model("r18", num_features=512)))
    order = ["compact-tiny", "compact", "compact-wide"]
    nets += [(name, build_backbone(name)) for name in order if name in available_backbones()]

    rows = []
    for name, model in nets:
        params = sum(p.numel() for p in model.parameters()) / 1e6
        rows.append((name, params, forward_mflops(model), step_seconds(model, args.batch, args.steps)))
    base = rows[0][3]
    print(f"batch {args.batch}, {args.threads} threads, median of {args.steps} steps; baseline: {rows[0][0]}")
    print(f"{'network':<20} {'params (M)':>10} {'fwd MFLOP/img':>14} {'step (s)':>9} {'ratio':>6}")
    for name, params, mflop, sec in rows:
        print(f"{name:<20} {params:>10.2f} {mflop:>14.0f} {sec:>9.3f} {sec / base:>6.2f}")


if __name__ == "__main__":
    main()
