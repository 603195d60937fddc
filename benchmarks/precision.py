"""Every head on both layers in mixed precision, against float32 and float64: the precision table.

For each registered head (its defaults; LH2Face also without its proxy terms), each layer
(``dense``: the dense cosines through :func:`~lh2face_plugin.layers.dense.dense_head_loss`;
``blockwise``: :func:`~lh2face_plugin.layers.blockwise.blockwise_head_loss`; ``evaluate``: the head's
dense logits and terms, ``Head.evaluate``, with ``F.cross_entropy``, as arcface_torch's ``PartialFC_V2``
uses a ``margin_loss``) and each precision:

* ``fp32``: float32 products (the reference of the other rows);
* ``bf16-autocast``: the caller's ``torch.autocast(device, torch.bfloat16)`` around the call;
* ``fp16-product``: products in float16 (``matmul_dtype=torch.float16``; on the CPU an emulation
  of CUDA's fp16 matmul);
* ``fp16-autocast`` (CUDA only): the caller's float16 autocast,

the loss and the gradients of the embeddings and class proxies are compared with the same
call in float32 (``loss``, ``grad``: relative differences, the gradient's as the largest
Frobenius ratio) and in float64 (``loss64``, ``grad64``). A row fails when a value is not
finite or a difference exceeds :data:`TOL`. ``--json`` is rewritten as each row finishes, so a
time-out keeps what finished.

    python benchmarks/precision.py --device cpu                       # CPU: bf16 and emulated fp16
    python benchmarks/precision.py --device cuda --rows 256 --classes 20000 --dim 512
"""
from __future__ import annotations

import argparse
import copy
import sys
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

import lh2face_plugin
from lh2face_plugin.layers.blockwise import blockwise_head_loss
from lh2face_plugin.fileio import write_json
from lh2face_plugin.layers.dense import dense_head_loss
from lh2face_plugin.layers.precision import no_autocast

TOL: Dict[str, Tuple[float, float]] = {          # precision -> (loss, gradient) relative tolerance vs float32
    "fp32": (1e-5, 1e-4),
    "bf16-autocast": (2e-2, 1e-1),
    "fp16-product": (2e-3, 2e-2),
    "fp16-autocast": (2e-3, 2e-2),
}
LAYERS = ("dense", "blockwise", "evaluate")


def precisions(device: torch.device) -> List[str]:
    out = ["fp32", "bf16-autocast", "fp16-product"]
    return out + (["fp16-autocast"] if device.type == "cuda" else [])


def heads() -> List[Tuple[str, str, dict]]:
    out = [(n, n, {}) for n in sorted(lh2face_plugin.available_heads())]
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
            g = torch.Generator(device).manual_seed(5)
            head.memory.copy_(F.normalize(torch.randn(head.memory.shape, device=device, generator=g), dim=1))
            head.filled.fill_(True)
    return head


def problem(rows: int, classes: int, dim: int, device: torch.device, dtype=torch.float32):
    """Raw embeddings with norms 10-40, class proxies, labels with one ignored row and the last class."""
    g = torch.Generator(device).manual_seed(0)
    z = torch.randn((rows, dim), generator=g, device=device)
    z = F.normalize(z, dim=1) * torch.empty((rows, 1), device=device).uniform_(10.0, 40.0, generator=g)
    w = torch.randn((classes, dim), generator=g, device=device) * 0.05
    labels = torch.randint(0, classes, (rows,), generator=g, device=device)
    labels[0], labels[-1] = -1, classes - 1
    return z.to(dtype), w.to(dtype), labels


def step(head0, layer: str, precision: str, z, w, labels, block_elements: Optional[int] = None):
    """(loss, grad of z, grad of w) of one call of ``head0``'s copy on ``layer`` in ``precision``."""
    head = copy.deepcopy(head0)
    if z.dtype == torch.float64:
        head = head.double()
    zz, ww = z.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    dev = z.device.type
    amp = {"bf16-autocast": torch.bfloat16, "fp16-autocast": torch.float16}.get(precision)
    mm = torch.float16 if precision == "fp16-product" else None
    with torch.autocast(dev, dtype=amp or torch.bfloat16, enabled=amp is not None):
        x = F.normalize(zz)
        norms = zz.norm(dim=1)
        if layer == "blockwise":
            loss, _ = blockwise_head_loss(head, x, ww, labels, norms=norms, matmul_dtype=mm,
                                          block_elements=block_elements)
        else:
            wn = F.normalize(ww)
            dt = mm or amp
            cos = (x @ wn.t()) if dt is None else (x.to(dt) @ wn.to(dt).t())
            if layer == "evaluate":   # the head itself under the caller's autocast, half cosines in
                out = head.evaluate(cos.clamp(-1, 1), labels, norms=norms, embeddings=x, weights=wn)
                loss = F.cross_entropy(out.logits, labels, ignore_index=-1)
                loss = loss if out.extra is None else loss + out.extra
            else:
                with no_autocast(dev):
                    loss, _ = dense_head_loss(head, cos.float().clamp(-1, 1), labels, norms=norms,
                                              embeddings=x.float(), weights=wn.float())
    loss.backward()
    return loss.detach(), zz.grad, ww.grad


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def table(device: torch.device, rows: int, classes: int, dim: int, json_path: Optional[str] = None,
          names: Optional[List[str]] = None, block_elements: Optional[int] = None) -> List[dict]:
    """Every (head, layer, precision) row; ``json_path`` rewritten as each finishes."""
    z, w, labels = problem(rows, classes, dim, device)
    out = []
    for label, name, kw in heads():
        if names and label not in names and name not in names:
            continue
        head0 = build(name, kw, classes, dim, device)
        for layer in LAYERS:
            ref = step(head0, layer, "fp32", z, w, labels, block_elements)
            ref64 = step(head0, layer, "fp32", z.double(), w.double(), labels, block_elements)
            for prec in precisions(device):
                loss, gz, gw = step(head0, layer, prec, z, w, labels, block_elements)
                finite = all(bool(torch.isfinite(t).all()) for t in (loss, gz, gw))
                row = dict(head=label, layer=layer, precision=prec, device=str(device), finite=finite,
                           loss=abs(float(loss - ref[0])) / max(abs(float(ref[0])), 1e-30),
                           grad=max(rel(gz, ref[1]), rel(gw, ref[2])),
                           loss64=abs(float(loss.double() - ref64[0])) / max(abs(float(ref64[0])), 1e-30),
                           grad64=max(rel(gz, ref64[1]), rel(gw, ref64[2])))
                tol = TOL[prec]
                row["ok"] = finite and row["loss"] <= tol[0] and row["grad"] <= tol[1]
                out.append(row)
                if json_path:
                    write_json(json_path, dict(benchmark="precision", device=str(device), rows=out))
    return out


def format_table(rows: List[dict]) -> str:
    lines = [f"{'head':<20}{'layer':<11}{'precision':<15}{'loss vs fp32':>14}{'grad vs fp32':>14}"
             f"{'loss vs fp64':>14}{'grad vs fp64':>14}  result"]
    for r in rows:
        tol = TOL[r["precision"]]
        lines.append(f"{r['head']:<20}{r['layer']:<11}{r['precision']:<15}{r['loss']:>14.1e}{r['grad']:>14.1e}"
                     f"{r['loss64']:>14.1e}{r['grad64']:>14.1e}  "
                     f"{'ok' if r['ok'] else ('NON-FINITE' if not r['finite'] else 'FAIL')} "
                     f"(tol {tol[0]:g}/{tol[1]:g})")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--classes", type=int, default=2000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--heads", nargs="+", help="only these heads (labels or registry names)")
    p.add_argument("--block-elements", type=int, help="entries per block of the blockwise layer")
    p.add_argument("--json", help="write the rows to this JSON file, rewritten as each row finishes")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("precision: no CUDA device is visible to torch")
        return 2
    device = torch.device(args.device)
    print(f"heads x layers in mixed precision on {device}: N={args.rows} C={args.classes} D={args.dim}, "
          "embedding norms 10-40; relative differences")
    rows = table(device, args.rows, args.classes, args.dim, args.json, args.heads, args.block_elements)
    print(format_table(rows))
    failed = sum(not r["ok"] for r in rows)
    print(f"{len(rows) - failed}/{len(rows)} ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
