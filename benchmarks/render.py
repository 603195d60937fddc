"""Render input module: reconstruction quality on synthetic faces and training cost.

1. Pretrains the reconstruction on synthetic faces on the CPU and
   prints SIDE / MAD / frontalisation error against the flat-depth / no-frontalisation
   baseline and the oracle geometry (ground-truth depth and pose fed to the renderer),
   all measured in this run. By default the pretraining is the supervised bootstrap alone
   (``--supervision 1 --reco-weight 0``: ground-truth depth and pose of the synthetic
   generator): in this CPU budget the self-supervised ``L_reco`` does not learn the
   viewpoint and, added to the bootstrap, pulls the predicted yaw to zero.
   ``--supervision 0 --reco-weight 1`` is the purely self-supervised run;
   ``--init render.pt --supervision 0 --reco-weight 1 --steps 300 --lr 1e-3`` fine-tunes a
   bootstrap checkpoint with L_reco alone (``--albedo frontalised`` for that variant).
2. Prints the forward+backward time of a recognition step with the module as a ratio to
   the plain backbone step measured in the same run (batch 128 by default): arcface_torch's
   iresnet50 when ARCFACE_TORCH_ROOT is set, else our ``compact`` backbone (a stand-in, stated
   in the output). Rows: the module alone (joint), with the extra backbone passes of
   ``canon_fraction`` of the batch, and a frozen reconstruction with the canonical pass (the
   render recipe until issue 26; these rows set ``lambda_canon=0.5, lambda_view=0.1``, no longer the defaults).
   ``benchmarks/render_price.py`` prices the current defaults.

    OMP_NUM_THREADS=2 python benchmarks/render.py                 # prints its steps and seconds
    python benchmarks/render.py --skip-cost                       # quality only
    python benchmarks/render.py --skip-quality --repeats 1        # cost only (R50 at batch 128: ~10 min)
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
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
    module = RenderInputModule(width=args.width, albedo=args.albedo, photo_weight=args.photo_weight,
                               flip_weight=args.flip_weight)
    if args.init:
        module.load_reconstruction(args.init)
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
    rows = {"trained module": after["module"], ("--init checkpoint" if args.init else "untrained module"): before["module"]}
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
    for i, fn in enumerate(fns):
        start = time.perf_counter()
        fn()
        print(f"  warm-up {i + 1}/{len(fns)}: {time.perf_counter() - start:.1f} s", flush=True)
    times = [[] for _ in fns]
    for r in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - start)
        print(f"  round {r + 1}/{repeats}: " + " ".join(f"{t[-1]:.1f}" for t in times) + " s", flush=True)
    return [statistics.median(t) for t in times]


def cost(args) -> None:
    from lh2face_plugin.render.module import RenderInputModule

    name, make = backbone_factory()
    torch.manual_seed(0)
    x = torch.rand(args.cost_batch, 3, 112, 112) * 2 - 1
    plain = make().train()
    terms = {"lambda_canon": 0.5, "lambda_view": 0.1}   # the canonical terms these rows time (off by default)
    joint = RenderInputModule(width=args.width, mode="joint", **terms)
    with tempfile.TemporaryDirectory() as tmp:  # a frozen module keeps a saved reconstruction fixed
        joint.save_reconstruction(os.path.join(tmp, "render.pt"))
        frozen = RenderInputModule(width=args.width, mode="frozen", checkpoint=os.path.join(tmp, "render.pt"),
                                   **terms)
    wrapped = {"joint": joint.wrap(make()).train(), "frozen": frozen.wrap(make()).train()}

    def plain_step():
        plain.zero_grad(set_to_none=True)
        plain(x).pow(2).mean().backward()

    def render_step(mode: str, canon_fraction: float):
        model = wrapped[mode]
        render = model.render

        def step():
            render.canon_fraction = canon_fraction or 1.0
            model.zero_grad(set_to_none=True)
            emb, out = model.forward_train(x)
            canon = canon_fraction > 0
            terms = render.losses(out, embed_fn=model.backbone if canon else None, input_embedding=emb,
                                  canon_loss_fn=(lambda e: e.pow(2).mean()) if canon else None)
            (emb.pow(2).mean() + terms["total"]).backward()

        return step

    rows = [("backbone alone (baseline)", plain_step),
            ("+ render module, joint (reconstruction, warps, L_reco, 7-ch stem)", render_step("joint", 0.0))]
    rows += [(f"  + backbone on canonical + re-rendered, canon_fraction {f:g}", render_step("joint", f))
             for f in args.canon_fractions if f > 0]
    rows += [(f"render module frozen + canonical pass, canon_fraction {f:g}", render_step("frozen", f))
             for f in args.frozen_canon_fractions if f > 0]
    times = _time_interleaved([fn for _, fn in rows], args.repeats)
    print(f"\n== cost: forward+backward, {name}, 112x112, batch {args.cost_batch}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats} interleaved runs ==")
    print(f"{'step':68s} {'seconds':>8s} {'ratio':>6s}")
    for (label, _), seconds in zip(rows, times):
        print(f"{label:68s} {seconds:8.3f} {seconds / times[0]:6.3f}")


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
    p.add_argument("--init", help="start from this reconstruction checkpoint (e.g. to fine-tune a bootstrap with L_reco)")
    p.add_argument("--albedo", choices=("predicted", "frontalised"), default="predicted",
                   help="RenderInputModule(albedo=...): what L_reco re-renders")
    p.add_argument("--photo-weight", type=float, default=1.0, help="L_reco's photometric term weight")
    p.add_argument("--flip-weight", type=float, default=0.5, help="L_reco's symmetry term weight")
    p.add_argument("--eval-faces", type=int, default=48)
    p.add_argument("--cost-batch", type=int, default=128, help="batch of the cost step (the issue's R50 step: 128)")
    p.add_argument("--canon-fractions", type=float, nargs="*", default=[0.125, 0.25],
                   help="canon_fraction values timed with the backbone passes on canonical and re-rendered faces")
    p.add_argument("--frozen-canon-fractions", type=float, nargs="*", default=[0.125],
                   help="canon_fraction values timed with a frozen reconstruction and the canonical terms")
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
