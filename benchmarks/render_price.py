"""The price of the render input module: size, training step and exported inference, against the plain backbone.

Three tables, each row measured or counted in this run:

1. **Size.** Parameters and forward MACs at 1x3x112x112 of the input module (its reconstruction network
   and renderer), of each backbone, and of each backbone behind the module (its stem widened to 7
   channels). MACs are counted as arcface_torch's ``flops.py`` counts them: ptflops'
   ``get_model_complexity_info(net, (3, 112, 112))``, reported in G as that script reports "GFLOPs"
   (multiply-accumulates). ptflops counts modules (convolutions, linear layers, norms, activations,
   pooling, upsampling) and a few functionals; the renderer's ``grid_sample`` warps are not counted.
   Parameters are every parameter, frozen or not (ptflops counts only trainable ones).
2. **Training step.** Forward + backward + SGD of backbone -> cross-entropy over a linear classifier, on
   the CPU at ``--batch``, plain against behind the frozen module at its defaults (lambda_canon =
   lambda_view = 0: one reconstruction forward without gradient, the 7-channel backbone), and with
   ``--with-terms`` the old recipe's terms (L_FR^canon and L_view on 0.125 of the batch, at least 2 rows).
   Median of
   ``--repeats`` interleaved rounds after one warm-up each, so load drifts over all variants alike.
3. **Inference.** Milliseconds per image of the model exported to ONNX by ``lh2face export``'s exporter
   (:func:`lh2face_plugin.export.onnx.export_onnx`, reconstruction and frontalisation in the graph),
   plain and with the module, run by onnxruntime on the CPU at ``--onnx-batch`` images per call.

Backbones named ``r50``, ``r100``, ... come from arcface_torch's ``backbones.get_model`` (``--arcface-root`` or
``ARCFACE_TORCH_ROOT``); ``compact-tiny`` and the other compact presets from the plugin.

    OMP_NUM_THREADS=2 python benchmarks/render_price.py --json price.json      # r50/r100 sizes, r50 and
                                                                                # compact-tiny steps and ONNX
The JSON file (``--json``) is rewritten after every row, so an interrupted run keeps what it measured.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------------------------------------ models

def backbone_factory(name: str, arcface_root: Optional[str], embedding_size: int) -> Callable[[], nn.Module]:
    """A constructor of the backbone ``name``: the plugin's presets, else arcface_torch's ``get_model``."""
    from lh2face_plugin.backbones import available_backbones, build_backbone

    if name in available_backbones():
        return lambda: build_backbone(name, embedding_size=embedding_size)
    if not arcface_root:
        raise SystemExit(f"backbone {name!r} is arcface_torch's: pass --arcface-root or set ARCFACE_TORCH_ROOT")
    root = os.path.abspath(arcface_root)
    if root not in sys.path:
        sys.path.insert(0, root)
    from backbones import get_model  # the checkout's own module

    return lambda: get_model(name, dropout=0.0, fp16=False, num_features=embedding_size)


def render_module(checkpoint: str, **kwargs):
    from lh2face_plugin import build_input_module

    return build_input_module("render", mode="frozen", checkpoint=checkpoint, **kwargs)


class _InputOnly(nn.Module):
    """The input module alone, ``images -> fused (B, 7, H, W) input``, for counting."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, images):
        return self.module(images)["input"]


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def gmacs(model: nn.Module) -> Optional[float]:
    """Forward GMACs at 1x3x112x112 by ptflops, as arcface_torch's flops.py; ``None`` without ptflops."""
    try:
        from ptflops import get_model_complexity_info
    except ImportError:
        return None
    model.eval()
    with torch.no_grad():
        macs, _ = get_model_complexity_info(model, (3, 112, 112), as_strings=False, print_per_layer_stat=False,
                                            ost=io.StringIO(), verbose=False)
    return float(macs) / 1000 ** 3


# ------------------------------------------------------------------------------------------------ timing

def time_interleaved(fns: List[Callable[[], None]], repeats: int) -> List[float]:
    """Median seconds of each function over ``repeats`` rounds that run them in turn, after one warm-up each."""
    for fn in fns:
        fn()
    times: List[List[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def train_step(model: nn.Module, batch: int, classes: int, seed: int) -> Callable[[], None]:
    """One SGD step of ``model`` -> cross-entropy over a linear classifier (the render terms added when the
    model is render-wrapped and has any)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, 112, 112, generator=g) * 2 - 1
    labels = torch.randint(0, classes, (batch,), generator=g)
    model.train()
    dim = model(x[:2]).shape[1]
    getattr(model, "pop_pending", lambda: None)()
    classifier = nn.Linear(dim, classes, bias=False)
    params = [p for p in list(model.parameters()) + list(classifier.parameters()) if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3)
    render = getattr(model, "render", None)

    def head_loss(e, y):
        return nn.functional.cross_entropy(classifier(nn.functional.normalize(e)) * 16.0, y)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        if render is None:
            emb = model(x)
            loss = head_loss(emb, labels)
        else:
            emb, out = model.forward_train(x)
            loss = head_loss(emb, labels) + render.losses(
                out, embed_fn=model.backbone, input_embedding=emb,
                canon_loss_fn=lambda e: head_loss(e, labels[:e.shape[0]]))["total"]
        loss.backward()
        opt.step()

    return step


def onnx_ms_per_image(path: str, batch: int, repeats: int, threads: int) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = (np.random.default_rng(0).random((batch, 3, 112, 112), dtype=np.float32) * 2 - 1)
    for _ in range(2):
        sess.run(None, {name: x})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sess.run(None, {name: x})
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000 / batch


# ------------------------------------------------------------------------------------------------ output

class Report:
    """Rows printed as they come and, with ``path``, the JSON file rewritten after each."""

    def __init__(self, path: Optional[str], meta: Dict[str, Any]) -> None:
        self.path, self.doc = path, {"benchmark": "render_price", **meta, "rows": []}

    def add(self, row: Dict[str, Any], line: str) -> None:
        self.doc["rows"].append(row)
        print(line, flush=True)
        if self.path:
            from lh2face_plugin.fileio import write_json

            write_json(self.path, self.doc)


def _fmt(value: Optional[float], spec: str) -> str:
    return "n/a".rjust(int(spec.split(".")[0])) if value is None else format(value, spec)


# ------------------------------------------------------------------------------------------------ main

def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arcface-root", default=os.environ.get("ARCFACE_TORCH_ROOT"),
                   help="arcface_torch checkout for r50/r100 (default: $ARCFACE_TORCH_ROOT)")
    p.add_argument("--networks", nargs="+", default=["r50", "r100", "compact-tiny"],
                   help="backbones of the size table")
    p.add_argument("--step-networks", nargs="*", default=["r50", "compact-tiny"],
                   help="backbones of the training-step table")
    p.add_argument("--onnx-networks", nargs="*", default=["r50", "compact-tiny"],
                   help="backbones of the ONNX inference table")
    p.add_argument("--checkpoint", help="the reconstruction (lh2face render pretrain); default: an untrained one of "
                                        "--width (the price does not depend on the weights)")
    p.add_argument("--width", type=int, default=16, help="reconstruction width when no --checkpoint (default 16)")
    p.add_argument("--embedding-size", type=int, default=512)
    p.add_argument("--batch", type=int, default=8, help="training-step batch (default 8)")
    p.add_argument("--classes", type=int, default=1000, help="classifier width of the training step")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds of the training step (median)")
    p.add_argument("--with-terms", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the input with L_FR^canon and L_view (0.5, 0.1 on 0.125 of the batch, >= 2 rows)")
    p.add_argument("--onnx-batch", type=int, default=1, help="images per onnxruntime call (default 1)")
    p.add_argument("--onnx-repeats", type=int, default=20, help="timed onnxruntime calls (median)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    p.add_argument("--json", help="write the rows to this JSON file (rewritten after each row)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from lh2face_plugin import __version__

    meta = {"version": __version__, "torch": torch.__version__, "threads": args.threads,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "batch": args.batch,
            "onnx_batch": args.onnx_batch, "repeats": args.repeats, "onnx_repeats": args.onnx_repeats,
            "flops": "ptflops get_model_complexity_info(net, (3, 112, 112)) MACs, as arcface_torch flops.py"}
    report = Report(args.json, meta)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint
        if checkpoint is None:
            from lh2face_plugin.render.module import RenderInputModule

            torch.manual_seed(0)
            checkpoint = os.path.join(tmp, "render.pt")
            RenderInputModule(width=args.width).save_reconstruction(checkpoint)
        from lh2face_plugin.render.module import RenderInputModule

        arch = dict(torch.load(checkpoint, weights_only=True)["config"])
        factories = {n: backbone_factory(n, args.arcface_root, args.embedding_size)
                     for n in dict.fromkeys(args.networks + args.step_networks + args.onnx_networks)}

        # 1. size
        print(f"== size: parameters and forward GMACs at 1x3x112x112 ({meta['flops']}) ==")
        if gmacs(nn.Identity()) is None:
            print("(GMACs n/a: ptflops is not installed; pip install ptflops, or lh2face-plugin[bench])")
        print(f"{'model':48s} {'params (M)':>11s} {'GMACs':>8s} {'params x':>9s} {'GMACs x':>8s}")
        module = RenderInputModule.from_checkpoint(checkpoint, mode="frozen")
        m_params, m_macs = parameters(module), gmacs(_InputOnly(module))
        report.add({"table": "size", "model": "render input module", "params": m_params, "gmacs": m_macs,
                    "reconstruction": arch},
                   f"{'render input module (reconstruction + renderer)':48s} {m_params / 1e6:11.3f} "
                   f"{_fmt(m_macs, '8.3f')}")
        for name in args.networks:
            make = factories[name]
            torch.manual_seed(0)
            plain = make()
            wrapped = RenderInputModule.from_checkpoint(checkpoint, mode="frozen").wrap(make())
            pp, pm = parameters(plain), gmacs(plain)
            wp, wm = parameters(wrapped), gmacs(wrapped)
            report.add({"table": "size", "model": name, "params": pp, "gmacs": pm},
                       f"{name:48s} {pp / 1e6:11.3f} {_fmt(pm, '8.3f')}")
            ratio_m = wm / pm if wm is not None and pm else None
            report.add({"table": "size", "model": f"{name} + render input", "params": wp, "gmacs": wm,
                        "params_ratio": wp / pp, "gmacs_ratio": ratio_m},
                       f"{name + ' + render input':48s} {wp / 1e6:11.3f} {_fmt(wm, '8.3f')} {wp / pp:9.3f} "
                       f"{_fmt(ratio_m, '8.3f')}")

        # 2. training step
        if args.step_networks:
            print(f"\n== training step: forward + backward + SGD, batch {args.batch}, {args.threads} threads, "
                  f"median of {args.repeats} interleaved rounds (frozen reconstruction) ==")
            print(f"{'backbone':14s} {'variant':52s} {'seconds':>8s} {'x plain':>8s}")
        for name in args.step_networks:
            make = factories[name]
            variants = [("plain", None), ("+ render input (defaults: no canonical terms)", {})]
            if args.with_terms:   # the canonical pass needs 2 rows for the backbones' BatchNorm in training mode
                rows = max(2, round(0.125 * args.batch))
                variants.append((f"+ render input, L_FR^canon + L_view, {rows} of {args.batch} rows",
                                 {"lambda_canon": 0.5, "lambda_view": 0.1, "canon_fraction": rows / args.batch}))
            steps = []
            for label, kw in variants:
                torch.manual_seed(0)
                model = make() if kw is None else render_module(checkpoint, **arch, **kw).wrap(make())
                steps.append(train_step(model, args.batch, args.classes, seed=1))
            seconds = time_interleaved(steps, args.repeats)
            for (label, kw), sec in zip(variants, seconds):
                ratio = sec / seconds[0]
                report.add({"table": "step", "network": name, "variant": label, "input_kwargs": kw,
                            "batch": args.batch, "seconds": sec, "ratio": ratio},
                           f"{name:14s} {label:52s} {sec:8.3f} {ratio:8.3f}")

        # 3. ONNX inference
        if args.onnx_networks:
            from lh2face_plugin.export.onnx import export_onnx

            logging.getLogger("torch.onnx").setLevel(logging.ERROR)   # "torchvision is not installed" notes

            print(f"\n== inference: exported ONNX, onnxruntime CPU, {args.threads} threads, batch {args.onnx_batch}, "
                  f"median of {args.onnx_repeats} calls ==")
            print(f"{'backbone':14s} {'variant':24s} {'ms/image':>9s} {'x plain':>8s} {'export s':>9s}")
        for name in args.onnx_networks:
            make = factories[name]
            results = []
            for label in ("plain", "+ render input"):
                torch.manual_seed(0)
                model = make() if label == "plain" else render_module(checkpoint, **arch).wrap(make())
                path = os.path.join(tmp, f"{name}-{'plain' if label == 'plain' else 'render'}.onnx")
                start = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                        warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    export_onnx(model.eval(), path, batch_sizes=(1, 2))
                exported = time.perf_counter() - start
                ms = onnx_ms_per_image(path, args.onnx_batch, args.onnx_repeats, args.threads)
                results.append(ms)
                ratio = ms / results[0]
                report.add({"table": "onnx", "network": name, "variant": label, "ms_per_image": ms, "ratio": ratio,
                            "onnx_mb": os.path.getsize(path) / 1e6, "export_seconds": exported},
                           f"{name:14s} {label:24s} {ms:9.2f} {ratio:8.3f} {exported:9.1f}")
    if args.json:
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
