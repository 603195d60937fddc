"""Render input module: reconstruction quality on synthetic faces and training cost.

1. Pretrains the reconstruction on synthetic faces on the CPU and
   prints SIDE / MAD / frontalisation error against the flat-depth / no-frontalisation
   baseline and the oracle geometry (ground-truth depth and pose fed to the renderer),
   all measured in this run. By default the pretraining is the supervised bootstrap alone
   (``--supervision 1 --reco-weight 0``: ground-truth depth and pose of the synthetic
   generator): in this CPU budget the self-supervised ``L_reco`` does not learn the
   viewpoint and, added to the bootstrap, pulls the predicted yaw to zero.
   ``--supervision 0 --reco-weight 1`` is the purely self-supervised run.
2. Prints the forward+backward time of a recognition step with the module as a ratio to
   the plain backbone step measured in the same run: arcface_torch's iresnet50 when
   ARCFACE_TORCH_ROOT is set, else our ``compact`` backbone (a stand-in, stated in the
   output).

    OMP_NUM_THREADS=2 python benchmarks/render.py                 # prints its steps and seconds
    python benchmarks/render.py --skip-cost                       # quality only
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch


def backbone_factory():
    root = os.environ.get("ARCFACE_TORCH_ROOT")
    if root:
        sys.path.insert(0, root)
        from backbones import get_model

        return "arcface_torch iresnet50 (r50)", lambda: get_model("r50", num_features=512)
    from lh2face_plugin.backbones import build_backbone

    return "compact (stand-in: ARCFACE_TORCH_ROOT unset)", lambda: build_backbone("compact", embedding_size=512)


def quality(args) -> None:
    from lh2face_plugin.render.evaluate import evaluate, format_table, synthetic_eval_set
    from lh2face_plugin.render.module import RenderInputModule
    from lh2face_plugin.render.pretrain import pretrain, synthetic_batches

    torch.manual_seed(args.seed)
    data = synthetic_eval_set(args.eval_faces, seed=1234)
    module = RenderInputModule(width=args.width)
    before = evaluate(module, data)
    batches = synthetic_batches(args.batch_size, pool=args.pool, truth=args.supervision > 0, seed=args.seed)
    start = time.perf_counter()
    history = pretrain(module, batches, args.steps, lr=args.lr, supervision=args.supervision,
                       reco_weight=args.reco_weight, progress=not args.quiet)
    elapsed = time.perf_counter() - start
    after = evaluate(module, data)
    parts = ([f"{args.reco_weight} x self-supervised L_reco"] if args.reco_weight > 0 else []) + (
        [f"{args.supervision} x ground-truth depth/pose"] if args.supervision > 0 else [])
    how = " + ".join(parts)
    print(f"\n== reconstruction quality: {args.steps} pretraining steps ({how}), batch {args.batch_size}, "
          f"{args.pool} pooled synthetic faces, {elapsed:.0f} s on {torch.get_num_threads()} threads; "
          f"{args.eval_faces} held-out identities yawed 15-45 deg ==")
    for key in ("reco", "supervised"):
        if key in history[0]:
            print(f"{key} loss {history[0][key]:.4f} -> {statistics.mean(h[key] for h in history[-20:]):.4f} "
                  f"(mean of the last 20 steps)")
    rows = {"pretrained module": after["module"], "untrained module": before["module"]}
    rows.update({k: v for k, v in after.items() if k != "module"})
    print(format_table(rows))
    base = after["flat depth / no frontalisation"]
    print(f"ratios to the baseline: SIDE {after['module']['side'] / base['side']:.3f}x, "
          f"MAD {after['module']['mad'] / base['mad']:.3f}x, frontal {after['module']['frontal'] / base['frontal']:.3f}x")
    with torch.no_grad():
        yaw = module(data["images"])["aux"]["reconstruction"].view[:, 0]
    true_yaw = data["view"][:, 0]
    print(f"predicted vs true yaw: correlation {torch.corrcoef(torch.stack([yaw, true_yaw]))[0, 1]:.3f}, "
          f"mean abs error {(yaw - true_yaw).abs().mean().rad2deg():.1f} deg")
    if args.save:
        module.save_reconstruction(args.save)
        print(f"wrote {args.save}")


def _time_interleaved(fns, repeats: int):
    """Median seconds of each function, run in turn ``repeats`` times (after one warm-up each),
    so that a shared machine's load drifts over all of them alike."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def cost(args) -> None:
    from lh2face_plugin.render.module import RenderInputModule

    name, make = backbone_factory()
    torch.manual_seed(0)
    x = torch.rand(args.cost_batch, 3, 112, 112) * 2 - 1
    plain = make().train()
    render = RenderInputModule(width=args.width)
    wrapped = render.wrap(make()).train()

    def plain_step():
        plain.zero_grad(set_to_none=True)
        plain(x).pow(2).mean().backward()

    def render_step(canon: bool):
        def step():
            wrapped.zero_grad(set_to_none=True)
            emb, out = wrapped.forward_train(x)
            terms = render.losses(out, embed_fn=wrapped.backbone if canon else None, input_embedding=emb,
                                  canon_loss_fn=(lambda e: e.pow(2).mean()) if canon else None)
            (emb.pow(2).mean() + terms["total"]).backward()

        return step

    t_plain, t_module, t_full = _time_interleaved([plain_step, render_step(False), render_step(True)], args.repeats)
    print(f"\n== cost: forward+backward, {name}, 112x112, batch {args.cost_batch}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats} interleaved runs ==")
    rows = [
        ("backbone alone (baseline)", t_plain),
        ("+ render module (reconstruction, warps, L_reco, 7-ch stem)", t_module),
        ("+ backbone on canonical and re-rendered faces (canon/view/id)", t_full),
    ]
    print(f"{'step':62s} {'seconds':>8s} {'ratio':>6s}")
    for label, seconds in rows:
        print(f"{label:62s} {seconds:8.3f} {seconds / t_plain:6.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--pool", type=int, default=2048, help="synthetic faces rendered once for pretraining")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--supervision", type=float, default=1.0,
                   help="weight of the ground-truth depth/pose bootstrap term (0 = none)")
    p.add_argument("--reco-weight", type=float, default=0.0,
                   help="weight of the self-supervised L_reco (--supervision 0 --reco-weight 1: Unsup3d-style)")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--eval-faces", type=int, default=48)
    p.add_argument("--cost-batch", type=int, default=8, help="batch of the cost step (R50 at 128 is too slow for 2 cores)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--skip-cost", action="store_true")
    p.add_argument("--save", help="write the pretrained reconstruction here")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    if not args.skip_quality:
        quality(args)
    if not args.skip_cost:
        cost(args)


if __name__ == "__main__":
    main()
