"""Every head under fp16/bf16 autocast against float32: same loss and gradients within a tolerance, no NaN.

Two checks per registered head (at its defaults, plus LH2Face without its proxy losses)
and per dtype, on one batch of a class shard:

* head: the head's inputs rounded to the dtype (cosines, norms, embeddings, proxies, as a
  half-precision matmul hands them over) and the head + cross-entropy (+ extra term)
  called inside ``torch.autocast(device, dtype)``, against the same rounded values in
  float32 without autocast. Heads compute in float32 under autocast, so the losses agree
  to float32 rounding; the gradients to the rounding of the dtype (they flow back into
  half tensors).
* end to end: normalise, cosine matmul, head and loss inside autocast from float32
  features and weights, against the whole computation in float32; the differences come
  from the half-precision matmul.

Each row prints the relative loss difference and the relative (Frobenius) gradient
difference; a row fails on a non-finite value or a difference above the tolerance
(``TOL``); the exit status is 1 if any row fails.

    python benchmarks/autocast_check.py --device cuda                  # fp16 and bf16
    python benchmarks/autocast_check.py --device cpu --dtypes bf16     # CPU autocast (checks this script)
"""
from __future__ import annotations

import argparse
import copy
import sys
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

import lh2face_plugin

# dtype -> (head loss, head grad, end-to-end loss, end-to-end grad): relative tolerances
TOL: Dict[str, Tuple[float, float, float, float]] = {
    "fp16": (1e-5, 1e-2, 2e-3, 1e-2),
    "bf16": (1e-5, 3e-2, 1e-2, 5e-2),
}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def heads():
    out = [(n, n, {}) for n in lh2face_plugin.available_heads()]
    out.append(("lh2face UAMF only", "lh2face", dict(lambda_pps=0.0, lambda_pns=0.0, lambda_pp=0.0)))
    return out


def build(name: str, kwargs: dict, classes: int, dim: int, device: torch.device):
    kw = dict(kwargs)
    if name == "lh2face":
        kw.setdefault("vmf_dim", dim)
    head = lh2face_plugin.build_head(name, **kw)
    head.setup_shard(classes, dim)
    head.to(device)
    if hasattr(head, "memory") and hasattr(head, "filled") and head.memory.numel():
        with torch.no_grad():
            head.memory.copy_(F.normalize(torch.randn(head.memory.shape, device=device), dim=1))
            head.filled.fill_(True)
    return head


def loss_of(head, cos, labels, norms, x, w) -> torch.Tensor:
    out = head.evaluate(cos, labels, norms=norms, embeddings=x, weights=w)
    if out.logits.dtype != torch.float32:
        raise TypeError(f"logits in {out.logits.dtype}, expected float32")
    loss = F.cross_entropy(out.logits, labels)
    return loss if out.extra is None else loss + out.extra


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def check(head0, z: torch.Tensor, wt: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype,
          device: torch.device) -> Dict[str, float]:
    """Relative differences (head loss, head grad, e2e loss, e2e grad) and finiteness."""
    with torch.no_grad():
        norms0, x0, w0 = z.norm(dim=1), F.normalize(z), F.normalize(wt)
        cos0 = (x0 @ w0.t()).clamp(-1, 1)
    half = [t.to(dtype) for t in (cos0, norms0, x0, w0)]

    def head_run(inputs, amp: Optional[torch.dtype]):
        head = copy.deepcopy(head0)
        leaves = [t.detach().clone().requires_grad_() for t in inputs]
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = loss_of(head, leaves[0], labels, leaves[1], leaves[2], leaves[3])
        loss.backward()
        return loss.detach(), [leaf.grad.float() if leaf.grad is not None else None for leaf in leaves]

    ref_loss, ref_grads = head_run([t.float() for t in half], None)
    amp_loss, amp_grads = head_run(half, dtype)
    pairs = [(a, b) for a, b in zip(amp_grads, ref_grads) if b is not None]
    head_grad = max((rel(a, b) for a, b in pairs), default=0.0)
    finite = bool(torch.isfinite(amp_loss)) and all(bool(torch.isfinite(a).all()) for a, _ in pairs)

    def e2e(amp: Optional[torch.dtype]):
        head = copy.deepcopy(head0)
        zz, ww = z.detach().clone().requires_grad_(), wt.detach().clone().requires_grad_()
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            x, w = F.normalize(zz), F.normalize(ww)
            cos = (x @ w.t()).clamp(-1, 1)
            loss = loss_of(head, cos, labels, zz.norm(dim=1), x, w)
        loss.backward()
        return loss.detach(), zz.grad, ww.grad

    l32, gz32, gw32 = e2e(None)
    lh, gzh, gwh = e2e(dtype)
    finite = finite and bool(torch.isfinite(lh)) and bool(torch.isfinite(gzh).all()) and bool(torch.isfinite(gwh).all())
    return dict(head_loss=abs(float(amp_loss - ref_loss)) / max(abs(float(ref_loss)), 1e-30), head_grad=head_grad,
                e2e_loss=abs(float(lh - l32)) / max(abs(float(l32)), 1e-30),
                e2e_grad=max(rel(gzh, gz32), rel(gwh, gw32)), finite=finite)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    p.add_argument("--dtypes", nargs="+", default=["fp16", "bf16"], choices=sorted(DTYPES))
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--classes", type=int, default=4096)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("autocast_check: no CUDA device is visible to torch")
        return 2
    device = torch.device(args.device)
    gen = torch.Generator(device).manual_seed(0)
    z = (torch.randn((args.rows, args.dim), generator=gen, device=device) / args.dim ** 0.5
         * torch.empty((args.rows, 1), device=device).uniform_(8.0, 80.0, generator=gen))
    wt = torch.randn((args.classes, args.dim), generator=gen, device=device) * 0.01
    labels = torch.randint(0, args.classes, (args.rows,), generator=gen, device=device)
    print(f"heads under autocast vs float32 on {device}: N={args.rows} C={args.classes} D={args.dim}; "
          "relative differences (tolerance)")
    print(f"{'head':<22}{'dtype':<6}{'head loss':>18}{'head grad':>18}{'e2e loss':>18}{'e2e grad':>18}  result")
    rows, failed = [], 0
    for label, name, kw in heads():
        head0 = build(name, kw, args.classes, args.dim, device)
        for dname in args.dtypes:
            r = check(head0, z, wt, labels, DTYPES[dname], device)
            tol = TOL[dname]
            vals = [r["head_loss"], r["head_grad"], r["e2e_loss"], r["e2e_grad"]]
            ok = r["finite"] and all(v <= t for v, t in zip(vals, tol))
            failed += not ok
            cells = "".join(f"{f'{v:.1e} ({t:g})':>18}" for v, t in zip(vals, tol))
            print(f"{label:<22}{dname:<6}{cells}  {'ok' if ok else ('NON-FINITE' if not r['finite'] else 'FAIL')}")
            rows.append(dict(head=label, dtype=dname, ok=ok, **r))
    if args.json:
        from lh2face_plugin.fileio import write_json

        write_json(args.json, dict(benchmark="autocast", device=str(device), rows=rows))
    print(f"{len(rows) - failed}/{len(rows)} ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
