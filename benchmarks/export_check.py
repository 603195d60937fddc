"""Export parity with the torch model on ``--device``: ONNX (onnxruntime, CPU) against torch on that device.

The network (``--model`` weights, e.g. the lh2face ``model.pt`` of
``train_throughput.py``, or a random initialisation without it) is moved to ``--device``
and exported with :func:`lh2face_plugin.export.export_onnx`, which runs the graph in
onnxruntime at batch 1 and 8 against torch and refuses a minimum cosine below 0.9999.
On CUDA this compares cuDNN's kernels (TF32 convolutions where torch allows them) with
onnxruntime's float32 CPU kernels. Prints the cosines and the largest relative difference.

    python benchmarks/export_check.py --device cuda --network r50 --model /tmp/lh2face_bench_train/lh2face/model.pt
    python benchmarks/export_check.py --device cpu --network compact-tiny          # a CPU check of the script
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time


def build(network: str, model: str, dim: int, root: str):
    from lh2face_plugin.backbones import available_backbones, build_backbone, load_backbone

    if model:
        return load_backbone(model, network, arcface_root=root or None)
    if network.lower().replace("_", "-") in available_backbones():
        return build_backbone(network, embedding_size=dim)
    if not root:
        raise SystemExit(f"network {network!r} comes from arcface_torch: set --arcface-root or ARCFACE_TORCH_ROOT")
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module("backbones").get_model(network, dropout=0.0, fp16=False, num_features=dim)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=("cpu", "cuda"))
    p.add_argument("--network", default="r50")
    p.add_argument("--model", default="", help="weights (model.pt); default: a random initialisation")
    p.add_argument("--embedding-size", type=int, default=512)
    p.add_argument("--arcface-root", default=os.environ.get("ARCFACE_TORCH_ROOT", ""))
    p.add_argument("--out", default="", help="folder for the .onnx (default: a temporary folder)")
    p.add_argument("--json", help="also write the result to this JSON file")
    args = p.parse_args(argv)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("export_check: no CUDA device is visible to torch")
        return 2
    from lh2face_plugin.export.onnx import export_onnx

    if args.model and not os.path.isfile(args.model):
        print(f"export_check: {args.model} not found; exporting a randomly initialised {args.network}")
        args.model = ""
    torch.manual_seed(0)
    net = build(args.network, args.model, args.embedding_size, args.arcface_root).to(args.device).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(args.out or tmp, f"{args.network}.onnx")
        if args.out:
            os.makedirs(args.out, exist_ok=True)
        t0 = time.perf_counter()
        try:
            report = export_onnx(net, path)
            status, cosine, diff = "ok", report.cosine, report.max_rel_diff
        except RuntimeError as exc:
            status, cosine, diff = f"FAIL: {exc}", {}, {}
        wall = time.perf_counter() - t0
    worst = min(cosine.values()) if cosine else float("nan")
    print(f"export {args.network} ({'weights ' + args.model if args.model else 'random init'}) from torch on "
          f"{args.device}: {status}; min cosine onnxruntime vs torch {worst:.7f} "
          f"(per batch {', '.join(f'{b}: {c:.7f}' for b, c in cosine.items())}); max relative difference "
          f"{max(diff.values()) if diff else float('nan'):.1e}; {wall:.0f} s")
    if args.json:
        from lh2face_plugin.fileio import write_json

        write_json(args.json, dict(benchmark="export", device=args.device, network=args.network,
                                   weights=args.model or "random", status=status, min_cosine=worst,
                                   cosine={str(k): v for k, v in cosine.items()},
                                   max_rel_diff=max(diff.values()) if diff else None, seconds=wall))
    return 0 if status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
