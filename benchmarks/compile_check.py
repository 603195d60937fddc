"""``torch.compile`` of a training step through the plugin's Partial FC against eager: gradients and time.

A small backbone stand-in (a linear layer from ``--features`` inputs to D) feeds the plugin's
Partial FC (arcface_torch's real ``PartialFC_V2`` underneath, one-process group) with a head;
the forward is compiled with each ``--backends`` entry and two steps run (a stateful head's
state moves between them). A row passes when the loss and the gradients of the backbone and of
the class proxies equal the eager ones to ``--tol`` (largest entry error relative to the
largest entry). The time column is the median of ``--repeats`` later steps (compiled) against
eager, compile time left out. The rows go to ``--json`` as they finish.

    ARCFACE_TORCH_ROOT=... python benchmarks/compile_check.py --device cuda
    ARCFACE_TORCH_ROOT=... python benchmarks/compile_check.py --device cpu --rows 16 --classes 200 --dim 16
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import statistics
import sys
import tempfile
import time
from typing import List

import torch
import torch.distributed as dist

import lh2face_plugin
from lh2face_plugin.arcface_torch.compat import cpu_only
from lh2face_plugin.arcface_torch.partial_fc import partial_fc_class
from lh2face_plugin.fileio import write_json


def run(pfc_class, name: str, blockwise: bool, backend, args, device: torch.device):
    """(loss of 2 steps, backbone grad, proxy grad, median step seconds) with ``backend`` (None: eager)."""
    torch.manual_seed(0)
    backbone = torch.nn.Linear(args.features, args.dim).to(device)
    kw = dict(vmf_dim=args.dim) if name == "lh2face" else {}
    pfc = pfc_class(lh2face_plugin.build_head(name, **kw), args.dim, args.classes, 1.0, False,
                    blockwise=blockwise).to(device)
    g = torch.Generator(device).manual_seed(1)
    images = torch.randn((args.rows, args.features), generator=g, device=device)
    labels = torch.randint(0, args.classes, (args.rows,), generator=g, device=device)

    def forward(images):
        return pfc(backbone(images) * 8.0, labels)

    fn = forward if backend is None else torch.compile(forward, backend=backend)

    def step():
        backbone.zero_grad(set_to_none=True)
        pfc.zero_grad(set_to_none=True)
        loss = fn(images)
        loss.backward()
        return loss.detach()

    losses = torch.stack([step(), step()])
    grad_w = pfc.weight.grad.to_dense() if pfc.weight.grad.is_sparse else pfc.weight.grad
    out = (losses, backbone.weight.grad.clone(), grad_w.clone())
    times = []
    for _ in range(args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return (*out, statistics.median(times))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--classes", type=int, default=20000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--features", type=int, default=64)
    p.add_argument("--heads", nargs="+", default=["lh2face", "arcface"])
    p.add_argument("--backends", nargs="+", default=["eager", "aot_eager", "inductor"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tol", type=float, default=1e-5)
    p.add_argument("--arcface-root", default=os.environ.get("ARCFACE_TORCH_ROOT", ""))
    p.add_argument("--json", help="write the rows to this JSON file, rewritten as each row finishes")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("compile_check: no CUDA device is visible to torch")
        return 2
    if not os.path.isfile(os.path.join(args.arcface_root, "partial_fc_v2.py")):
        raise SystemExit("compile_check needs arcface_torch's checkout: --arcface-root or ARCFACE_TORCH_ROOT")
    sys.path.insert(0, args.arcface_root)
    device = torch.device(args.device)
    rows: List[dict] = []
    print(f"torch.compile of a Partial FC step on {device}: N={args.rows} C={args.classes} D={args.dim}; "
          f"error vs eager (tolerance {args.tol:g}), step time vs eager")
    print(f"{'head':<10}{'layer':<11}{'backend':<11}{'loss err':>10}{'grad err':>10}{'ms':>9}{'/eager':>8}  result")
    with tempfile.TemporaryDirectory() as tmp, (cpu_only() if device.type == "cpu" else contextlib.nullcontext()):
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                init_method=f"file://{os.path.join(tmp, 'pg')}", rank=0, world_size=1)
        try:
            pfc_class = partial_fc_class(importlib.import_module("partial_fc_v2"))
            for name in args.heads:
                for layer in ("dense", "blockwise"):
                    ref = run(pfc_class, name, layer == "blockwise", None, args, device)
                    for backend in args.backends:
                        torch._dynamo.reset()
                        try:
                            got = run(pfc_class, name, layer == "blockwise", backend, args, device)
                            errs = [float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
                                    for a, b in zip(got[:3], ref[:3])]
                            row = dict(head=name, layer=layer, backend=backend, loss_err=errs[0],
                                       grad_err=max(errs[1:]), ms=got[3] * 1e3, eager_ms=ref[3] * 1e3,
                                       ok=max(errs) <= args.tol)
                        except Exception as exc:  # noqa: BLE001 - a backend that fails is a result
                            row = dict(head=name, layer=layer, backend=backend, ok=False,
                                       error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                        rows.append(row)
                        if "error" in row:
                            print(f"{name:<10}{layer:<11}{backend:<11}  {row['error'][:80]}  FAIL")
                        else:
                            print(f"{name:<10}{layer:<11}{backend:<11}{row['loss_err']:>10.1e}{row['grad_err']:>10.1e}"
                                  f"{row['ms']:>9.1f}{row['ms'] / row['eager_ms']:>8.2f}  "
                                  f"{'ok' if row['ok'] else 'FAIL'}")
                        if args.json:
                            write_json(args.json, dict(benchmark="compile", device=str(device), rows=rows))
        finally:
            dist.destroy_process_group()
    failed = sum(not r["ok"] for r in rows)
    print(f"{len(rows) - failed}/{len(rows)} ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
