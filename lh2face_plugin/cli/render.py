"""``lh2face render``: pretrain, inspect and evaluate the renderer-augmented input module."""
from __future__ import annotations

import argparse
import math
import os
import time

from ..finite import require_finite_parameters
from ._common import add_command

EXAMPLES = """
  lh2face render pretrain --data synthetic --steps 1000 --pool 2048 --out render.pt
  lh2face render pretrain --data synthetic --supervision 0 --reco-weight 1 --albedo frontalised --out self.pt
  lh2face render pretrain --data aligned_faces/ --steps 5000 --batch-size 64 --out render.pt
  lh2face render show face.jpg --checkpoint render.pt --albedo frontalised --out grid.png
  lh2face render show photo.jpg --landmarks 38 51 73 51 56 71 41 92 70 92 --synthetic 2 --out grid.png
  lh2face render eval --checkpoint render.pt --num 64
"""


PRETRAIN_EXAMPLES = """
  lh2face render pretrain --steps 1000 --pool 2048 --out render.pt    # ground truth of synthetic faces
  lh2face render pretrain --data synthetic --supervision 0 --reco-weight 1 --albedo frontalised --out self.pt
  lh2face render pretrain --data aligned_faces/ --steps 5000 --batch-size 64 --out render.pt
  lh2face render pretrain --checkpoint render.pt --steps 200 --out render.pt   # continue training
"""
SHOW_EXAMPLES = """
  lh2face render show face.jpg --checkpoint render.pt --albedo frontalised --out grid.png
  lh2face render show photo.jpg --landmarks 38 51 73 51 56 71 41 92 70 92 --out grid.png
  lh2face render show --synthetic 4 --checkpoint render.pt --out grid.png
"""
EVAL_EXAMPLES = """
  lh2face render eval --checkpoint render.pt --num 64
  lh2face render eval --num 16 --seed 7                # untrained network: the flat-depth baseline
"""


def register(subparsers) -> None:
    p = add_command(subparsers, "render", "pretrain, show and evaluate the render input module", EXAMPLES, None)
    p.set_defaults(func=lambda args: p.print_help() or 0)
    sub = p.add_subparsers(dest="render_command", metavar="ACTION")
    pre = add_command(sub, "pretrain", "train the reconstruction alone (ground truth of synthetic faces, or "
                                       "self-supervised)", PRETRAIN_EXAMPLES, _pretrain)
    pre.add_argument("--data", default="synthetic", help="'synthetic' or a folder of aligned 112x112 faces")
    pre.add_argument("--steps", type=int, default=300)
    pre.add_argument("--batch-size", type=int, default=16)
    pre.add_argument("--lr", type=float, default=1e-3)
    pre.add_argument("--supervision", type=float, default=None,
                     help="with --data synthetic: weight of the ground-truth depth/pose term (default 1 with "
                          "synthetic data, 0 with a folder; 0 = self-supervised)")
    pre.add_argument("--reco-weight", type=float, default=None,
                     help="weight of the self-supervised L_reco (default 0 with synthetic data: the ground-truth "
                          "term alone is what learns depth and pose, see benchmarks/render.py; 1 with a folder)")
    pre.add_argument("--albedo", choices=("predicted", "frontalised"), default="predicted",
                     help="what L_reco re-renders (RenderInputModule's albedo)")
    pre.add_argument("--pool", type=int, default=0, metavar="N",
                     help="with --data synthetic: render N faces once and sample batches from them (0 = fresh faces)")
    pre.add_argument("--width", type=int, default=16, help="channel width of the reconstruction network")
    pre.add_argument("--checkpoint", help="continue from this checkpoint")
    pre.add_argument("--seed", type=int, default=0)
    pre.add_argument("--out", required=True,
                     help="checkpoint to write (atomically; an existing file must be a render checkpoint)")
    show = add_command(sub, "show", "draw input | canonical face | depth | re-rendered input", SHOW_EXAMPLES, _show)
    show.add_argument("images", nargs="*", metavar="IMAGE", help="aligned 112x112 faces, or larger portraits")
    show.add_argument("--landmarks", type=float, nargs=10, metavar="XY",
                      help="5 landmarks (x y pairs) of a single IMAGE, to align it with norm_crop")
    show.add_argument("--synthetic", type=int, default=0, metavar="K", help="add K yawed synthetic faces")
    show.add_argument("--checkpoint", help="reconstruction weights (default: untrained)")
    show.add_argument("--albedo", choices=("predicted", "frontalised"), default="predicted",
                      help="re-render the predicted albedo maps, or the canonical face divided by the shading "
                           "(the albedo maps of a ground-truth bootstrap are untrained)")
    show.add_argument("--out", required=True, help="PNG to write")
    ev = add_command(sub, "eval", "SIDE, MAD and frontalisation error on synthetic faces", EVAL_EXAMPLES, _eval)
    ev.add_argument("--checkpoint", help="reconstruction weights (default: untrained)")
    ev.add_argument("--num", type=int, default=64, help="yawed synthetic faces")
    ev.add_argument("--seed", type=int, default=1234)


def _module(checkpoint, **kwargs):
    from ..render.module import RenderInputModule  # lazy: start-up

    if checkpoint:
        module = RenderInputModule.from_checkpoint(checkpoint, **kwargs)
        require_finite_parameters(module, checkpoint)
        return module
    return RenderInputModule(**kwargs)


def _pretrain(args: argparse.Namespace) -> int:
    import torch  # lazy: start-up

    from ..render.pretrain import folder_batches, pretrain, synthetic_batches  # lazy: start-up

    for name in ("steps", "batch_size", "width"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise ValueError(f"--lr must be a finite number > 0, got {args.lr}")
    if os.path.isdir(args.out):
        raise IsADirectoryError(f"--out {args.out} is a folder; give the checkpoint file to write, e.g. --out "
                                f"{os.path.join(args.out, 'render.pt')}")
    torch.manual_seed(args.seed)
    if os.path.exists(args.out) and os.path.abspath(args.out) != os.path.abspath(args.checkpoint or ""):
        from ..render.module import read_checkpoint  # lazy: start-up

        try:
            read_checkpoint(args.out)
        except (ValueError, OSError):
            raise FileExistsError(f"--out {args.out}: the file exists and is not a render checkpoint; choose "
                                  "another path (pretrain replaces only its own checkpoints)") from None
    synthetic = args.data == "synthetic"
    if args.supervision is None:
        args.supervision = 1.0 if synthetic else 0.0
    if args.reco_weight is None:
        args.reco_weight = 0.0 if synthetic and args.supervision > 0 else 1.0
    if args.checkpoint:
        module = _module(args.checkpoint, albedo=args.albedo)
    else:
        module = _module(None, width=args.width, albedo=args.albedo)
    if synthetic:
        batches = synthetic_batches(args.batch_size, pool=args.pool, truth=args.supervision > 0, seed=args.seed)
    elif args.supervision > 0:
        raise ValueError("--supervision needs --data synthetic (a folder of images has no ground truth)")
    else:
        batches = folder_batches(args.data, args.batch_size, seed=args.seed)
    start = time.perf_counter()
    history = pretrain(module, batches, args.steps, lr=args.lr, supervision=args.supervision,
                       reco_weight=args.reco_weight)
    elapsed = time.perf_counter() - start
    for step, h in enumerate(history):
        if not all(math.isfinite(float(v)) for v in h.values()):
            raise FloatingPointError(f"the loss became NaN or infinite at step {step + 1} "
                                     f"({', '.join(f'{k} {v}' for k, v in h.items())}); lower --lr; "
                                     f"nothing was written to {args.out}")
    require_finite_parameters(module, f"the trained reconstruction (nothing was written to {args.out})")
    module.save_reconstruction(args.out)
    tail = history[-min(20, len(history)):]
    parts = [f"{name} {history[0][name]:.4f} -> {sum(h[name] for h in tail) / len(tail):.4f}"
             for name in ("reco", "supervised") if name in history[0]]
    print(f"{args.steps} steps in {elapsed:.1f} s; {', '.join(parts)} (first -> mean of the last {len(tail)}); "
          f"wrote {args.out}")
    return 0


def _show(args: argparse.Namespace) -> int:
    import torch  # lazy: start-up

    from ..render.show import load_face, render_panels, save_grid, to_tensor  # lazy: start-up

    if not args.images and args.synthetic <= 0:
        raise ValueError("give at least one IMAGE or --synthetic K")
    if any(os.path.exists(p) and os.path.exists(args.out) and os.path.samefile(p, args.out) for p in args.images):
        raise ValueError(f"--out {args.out} is one of the input images; choose another file for the grid")
    if args.landmarks is not None and len(args.images) != 1:
        raise ValueError(f"--landmarks aligns a single IMAGE, got {len(args.images)} images")
    faces = [load_face(p, args.landmarks) for p in args.images]
    labels = [os.path.basename(p) for p in args.images]
    if args.synthetic > 0:
        from ..render.evaluate import synthetic_eval_set  # lazy: start-up

        data = synthetic_eval_set(args.synthetic, seed=7)
        faces += [((x.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
                  for x in data["images"]]
        labels += [f"synthetic {i}" for i in range(args.synthetic)]
    module = _module(args.checkpoint, albedo=args.albedo)
    path = save_grid(render_panels(module, to_tensor(faces)), args.out, labels)
    print(f"wrote {path} ({len(faces)} rows)")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from ..render.evaluate import evaluate, format_table, synthetic_eval_set  # lazy: start-up

    module = _module(args.checkpoint)
    result = evaluate(module, synthetic_eval_set(args.num, seed=args.seed))
    _check_finite_result(result, args.checkpoint or "the untrained network")
    print(format_table(result))
    return 0


def _check_finite_result(result, where: str) -> None:
    def walk(value, key):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, (int, float)) and not math.isfinite(value):
            raise FloatingPointError(f"{where}: the metric {key} is {value}; its reconstruction produced NaN or "
                                     "infinite values, so no table is printed")

    walk(result, "")
