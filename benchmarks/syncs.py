"""Host syncs of one classification-layer step: per head, layer and sampling, with one block and with many.

A step (forward and backward of :func:`~lh2face_plugin.layers.dense.dense_head_loss` or
:func:`~lh2face_plugin.layers.blockwise.blockwise_head_loss`) runs under
:class:`~lh2face_plugin.layers.syncs.HostSyncCounter`, once with a single block and once with
``--blocks`` blocks. A row passes when the two counts are equal (no sync inside the block loop).
On CUDA both steps also run under ``torch.cuda.set_sync_debug_mode("warn")`` and the
synchronisations CUDA reports are counted (column ``cuda warns``, the many-block step's); they
must not grow with the blocks either.
The rows go to ``--json`` as they finish.

    python benchmarks/syncs.py --device cuda
    python benchmarks/syncs.py --device cpu --rows 32 --classes 500 --dim 32
"""
from __future__ import annotations

import argparse
import sys
import warnings
from typing import List, Optional

import torch
import torch.nn.functional as F

import lh2face_plugin
from lh2face_plugin.fileio import write_json
from lh2face_plugin.layers.blockwise import blockwise_head_loss
from lh2face_plugin.layers.dense import dense_head_loss
from lh2face_plugin.layers.syncs import HostSyncCounter


def one_step(name: str, layer: str, sampled: bool, rows: int, classes: int, dim: int, block_elements: int,
             device: torch.device, cuda_warn: bool = False):
    """(syncs by operator, CUDA sync warnings or None) of one forward + backward."""
    g = torch.Generator(device).manual_seed(0)
    z = torch.randn((rows, dim), generator=g, device=device) * 20
    w = torch.randn((classes, dim), generator=g, device=device).requires_grad_()
    index = torch.randperm(classes, generator=g, device=device)[: classes // 5].sort().values if sampled else None
    cols = classes // 5 if sampled else classes
    labels = torch.randint(0, cols, (rows,), generator=g, device=device)
    kw = dict(vmf_dim=dim) if name == "lh2face" else {}
    head = lh2face_plugin.build_head(name, **kw)
    head.setup_shard(classes, dim)
    head.to(device)
    x = F.normalize(z).requires_grad_()
    from lh2face_plugin.layers import products

    saved = products.BLOCK_ELEMENTS, products.CUDA_BLOCK_ELEMENTS
    products.BLOCK_ELEMENTS = products.CUDA_BLOCK_ELEMENTS = block_elements
    caught: Optional[list] = None
    try:
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            if cuda_warn:
                torch.cuda.set_sync_debug_mode("warn")
            with HostSyncCounter() as syncs:
                if layer == "blockwise":
                    loss, _ = blockwise_head_loss(head, x, w, labels, norms=z.norm(dim=1), index=index,
                                                  block_elements=block_elements)
                else:
                    wn = F.normalize(w if index is None else w[index])
                    loss, _ = dense_head_loss(head, (x @ wn.t()).clamp(-1, 1), labels, norms=z.norm(dim=1),
                                              embeddings=x, weights=wn, class_index=index)
                loss.backward()
            if cuda_warn:
                torch.cuda.set_sync_debug_mode("default")
                caught = [r for r in rec if "synchroniz" in str(r.message)]
    finally:
        products.BLOCK_ELEMENTS, products.CUDA_BLOCK_ELEMENTS = saved
    return dict(syncs.ops), (len(caught) if caught is not None else None)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--classes", type=int, default=20000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--blocks", type=int, default=64, help="blocks of the many-block step (about)")
    p.add_argument("--heads", nargs="+", default=None, help="registered heads (default: all)")
    p.add_argument("--json", help="write the rows to this JSON file, rewritten as each row finishes")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("syncs: no CUDA device is visible to torch")
        return 2
    device = torch.device(args.device)
    names = args.heads or sorted(lh2face_plugin.available_heads())
    many = max(1, args.rows * args.classes // args.blocks)
    print(f"host syncs per step on {device}: N={args.rows} C={args.classes} D={args.dim}, 1 block vs about "
          f"{args.blocks} blocks")
    print(f"{'head':<16}{'layer':<11}{'classes':<9}{'syncs, 1 block':>16}{'syncs, many':>13}{'cuda warns':>12}  result")
    rows: List[dict] = []
    for name in names:
        for layer in ("dense", "blockwise"):
            for sampled in (False, True):
                cuda = device.type == "cuda"
                one, warned_one = one_step(name, layer, sampled, args.rows, args.classes, args.dim, 1 << 40, device,
                                           cuda_warn=cuda)
                lots, warned = one_step(name, layer, sampled, args.rows, args.classes, args.dim, many, device,
                                        cuda_warn=cuda)
                ok = one == lots and warned == warned_one
                row = dict(head=name, layer=layer, sampled=sampled, syncs_one_block=sum(one.values()),
                           syncs_many_blocks=sum(lots.values()), ops=lots, cuda_warnings=warned, ok=ok)
                rows.append(row)
                print(f"{name:<16}{layer:<11}{'20%' if sampled else 'all':<9}{sum(one.values()):>16}"
                      f"{sum(lots.values()):>13}{'-' if warned is None else warned:>12}  {'ok' if ok else 'FAIL'}")
                if args.json:
                    write_json(args.json, dict(benchmark="syncs", device=str(device), rows=rows))
    failed = sum(not r["ok"] for r in rows)
    print(f"{len(rows) - failed}/{len(rows)} ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
